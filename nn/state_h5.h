/* state_h5.h — module state in HDF5: one dataset per state_dict key, PyTorch layouts.
 *
 * The file layout is what h5py writes for `for k, v in sd.items(): f[k] = v.numpy()`:
 * datasets at the root named exactly by the state_dict keys ("conv1.weight",
 * "bn1.num_batches_tracked"), float32 parameters, integer buffers in their PyTorch
 * dtype. Such a file from PyTorch loads here as it is (float64 is converted to float32;
 * integers are range-checked into the buffer's dtype), and cqat's files load in
 * PyTorch with `{k: torch.from_numpy(f[k][()]) for k in f if isinstance(f[k], h5py.Dataset)}`.
 * Other objects at the root (groups such as "optimizer", attributes) are ignored by the
 * state loader, so a full checkpoint is also a state_dict file.
 *
 * Loading is strict by default and reports like PyTorch's load_state_dict:
 *   "weights.h5: error(s) loading state_dict: missing key(s): fc2.bias; unexpected
 *    key(s): fc3.weight; size mismatch for conv1.weight: file [16, 3, 3, 3], model
 *    [16, 1, 3, 3]"
 * Non-finite values in parameters are refused (training would go nowhere from them);
 * so is a negative running_var.
 *
 * Writes are atomic: nn_h5_writer writes "<path>.tmp-<pid>", then flushes, fsyncs and
 * renames it over <path>, so an interrupted save leaves the previous file intact.
 */
#ifndef CQAT_NN_STATE_H5_H
#define CQAT_NN_STATE_H5_H

#include <hdf5.h>

#include "nn/nn.h"

enum { NN_PATH_MAX = 4096 };

typedef struct nn_h5_writer {
    hid_t file;
    char path[NN_PATH_MAX];
    char tmp_path[NN_PATH_MAX + 32];
} nn_h5_writer;

/* Creates the temporary file; on failure nothing is left on disk. */
ag_status nn_h5_writer_open(nn_h5_writer *w, const char *path);
/* Closes, fsyncs and renames into place. On failure the temporary file is removed and
 * the previous file at `path` (if any) is untouched. */
ag_status nn_h5_writer_commit(nn_h5_writer *w);
/* Closes and removes the temporary file. */
void nn_h5_writer_abort(nn_h5_writer *w);

/* Opens an existing HDF5 file read-only, with a clear error for missing / non-HDF5
 * files. Close with H5Fclose. Returns H5I_INVALID_HID on error. */
hid_t nn_h5_open_read(const char *path);
/* Turns off HDF5's own error printing (cqat reports errors itself). Idempotent. */
void nn_h5_quiet(void);

/* Datasets and attributes. `label` names the file in error messages. */
ag_status nn_h5_write_tensor(hid_t loc, const char *name, const ag_tensor *t);
ag_status nn_h5_write_floats(hid_t loc, const char *name, const float *v, int32_t ndim,
                             const int64_t *shape);
/* Reads a float dataset of any shape holding exactly numel values. */
ag_status nn_h5_read_floats(hid_t loc, const char *label, const char *name, float *v,
                            int64_t numel);
ag_status nn_h5_write_attr_str(hid_t loc, const char *name, const char *value);
ag_status nn_h5_write_attr_i64(hid_t loc, const char *name, int64_t value);
ag_status nn_h5_write_attr_f64(hid_t loc, const char *name, double value);
/* Reads a string attribute into buf (NUL-terminated). */
ag_status nn_h5_read_attr_str(hid_t loc, const char *label, const char *name, char *buf,
                              size_t size);
ag_status nn_h5_read_attr_i64(hid_t loc, const char *label, const char *name, int64_t *value);
ag_status nn_h5_read_attr_f64(hid_t loc, const char *label, const char *name, double *value);
bool nn_h5_has_attr(hid_t loc, const char *name);
bool nn_h5_has_object(hid_t loc, const char *name);

/* Reads one dataset into an existing tensor, converting dtype and checking shape. */
ag_status nn_h5_read_tensor(hid_t loc, const char *label, const char *name, ag_tensor *t);

/* Writes every parameter and buffer of m as a dataset at loc. */
ag_status nn_state_save_h5(hid_t loc, nn_module *m);

typedef struct nn_load_opts {
    bool strict;          /* missing or unexpected keys are errors (default true) */
    bool allow_nonfinite; /* accept NaN/Inf parameters (default false) */
} nn_load_opts;
/* Loads the datasets at loc into m's state by key. opts NULL = strict. On error m may
 * be partly loaded only if the error came from reading a dataset after all keys and
 * shapes were verified (I/O failure); key and shape problems are found first. */
ag_status nn_state_load_h5(hid_t loc, const char *label, nn_module *m, const nn_load_opts *opts);
/* Convenience: open `path`, load, close. */
ag_status nn_state_load_file(const char *path, nn_module *m, const nn_load_opts *opts);

#endif
