/* checkpoint.h — a training checkpoint in one HDF5 file.
 *
 * Layout (docs/FORMAT.md has the full description):
 *   /<state_dict key>      one dataset per parameter and buffer, PyTorch names and
 *                          layouts, so the file is also a plain state_dict file
 *   /optimizer/<entry>     optimizer state (momentum buffers, Adam moments, steps)
 *   /train_state/rng       int64[2]: the context RNG (PCG32 state and increment)
 *   root attributes        format "cqat-checkpoint", format_version, model_name,
 *                          in_channels, in_h, in_w, num_classes, kind ("float" or
 *                          "qat"), epoch (completed), step (optimizer steps done),
 *                          train_args (the command line), optimizer attributes
 * Saving is atomic (nn_h5_writer): the previous file survives any interruption.
 */
#ifndef CQAT_TOOLS_CHECKPOINT_H
#define CQAT_TOOLS_CHECKPOINT_H

#include "nn/nn.h"
#include "nn/zoo.h"
#include "optim/optim.h"

enum { CQAT_CKPT_VERSION = 1 };

typedef struct cqat_ckpt_meta {
    nn_zoo_config model;
    char kind[16];          /* "float" or "qat" */
    int64_t epoch;          /* completed epochs */
    int64_t step;           /* optimizer steps done */
    ag_rng rng;             /* the context RNG */
    char train_args[2048];  /* how the run was started */
    char extra[2048];       /* room-specific settings (qat: qconfig, freeze epochs) */
} cqat_ckpt_meta;

/* Writes model state, optimizer state (opt may be NULL) and meta, atomically. */
ag_status cqat_ckpt_save(const char *path, nn_module *m, const optim_optimizer *opt,
                         const cqat_ckpt_meta *meta);
/* True if the file is a cqat checkpoint (has the format attribute); false for a plain
 * state_dict file. Errors (missing / not HDF5) are reported as such. */
ag_status cqat_ckpt_probe(const char *path, bool *is_ckpt);
/* Reads the metadata only (to rebuild the model before loading it). */
ag_status cqat_ckpt_read_meta(const char *path, cqat_ckpt_meta *meta);
/* Loads model state (strict) and, if opt is not NULL, the optimizer state. Nothing
 * is changed unless everything could be read and checked. */
ag_status cqat_ckpt_load(const char *path, nn_module *m, optim_optimizer *opt);

#endif
