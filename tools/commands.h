/* commands.h — the cqat subcommands and the helpers they share. */
#ifndef CQAT_TOOLS_COMMANDS_H
#define CQAT_TOOLS_COMMANDS_H

#include <stdbool.h>
#include <stdint.h>

#include "data/data.h"
#include "tools/train.h"

#include "qat/qconfig.h"
#include "tools/checkpoint.h"

int cqat_cmd_train(int argc, char **argv);
int cqat_cmd_qat(int argc, char **argv);
int cqat_cmd_eval(int argc, char **argv);
int cqat_cmd_convert(int argc, char **argv);
int cqat_cmd_calibrate(int argc, char **argv);
int cqat_cmd_quantize_dynamic(int argc, char **argv);
int cqat_cmd_infer(int argc, char **argv);
int cqat_cmd_inspect(int argc, char **argv);
int cqat_cmd_compare(int argc, char **argv);
int cqat_cmd_eval_q8(const char *path, const char *data, int64_t limit, bool json);
/* True if path holds a frozen cqat-q8 model. */
bool cqat_is_q8_file(const char *path);
int cqat_cmd_eval_file(const char *path, const char *model_name, bool qat_state,
                       const char *qconfig, const char *data, int64_t limit, bool json);

/* The model a checkpoint or state_dict file describes, with its state loaded: a cqat
 * checkpoint names its model and kind; a plain state_dict needs model_name, and
 * qat_state for a QAT-prepared one (its qconfig guessed from the file unless given).
 * QAT models come back with observers off and BN statistics frozen. *map (may be NULL
 * for float) must be freed after *m. */
ag_status cqat_model_for_file(const char *path, const char *model_name, bool qat_state,
                              const char *qconfig, nn_module **m, qat_qconfig_map **map,
                              cqat_ckpt_meta *meta);

/* Prints "cqat CMD: <last error>" to stderr and returns the exit status 1. */
int cqat_fail(const char *cmd);
int cqat_fail_msg(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Fashion-MNIST train and test sets (either may be NULL), cut to `limit` if > 0. */
ag_status cqat_load_data(const char *dir, int64_t limit, data_dataset *train,
                         data_dataset *test);
void cqat_print_json_eval(const char *kind, const cqat_eval_result *r, double extra_sps);

#endif
