/* args.h — strict command-line options for the cqat subcommands.
 *
 * A subcommand declares a table of options; cli_args_parse fills the targets and
 * refuses unknown flags, missing values, malformed or out-of-range numbers, with a
 * message naming the flag ("--batch-size: expected an integer >= 1, got '0'").
 * Positional arguments are collected in order.
 */
#ifndef CQAT_TOOLS_ARGS_H
#define CQAT_TOOLS_ARGS_H

#include <stdbool.h>
#include <stdint.h>

#include "autograd/ag_status.h"

typedef enum cli_opt_kind {
    CLI_INT,    /* int64_t target, within [min, max] */
    CLI_FLOAT,  /* double target, finite, within [min, max] */
    CLI_STR,    /* const char * target (points into argv) */
    CLI_FLAG,   /* bool target, set to true; no value */
    CLI_CHOICE, /* const char * target, one of `choices` ("a|b|c") */
} cli_opt_kind;

typedef struct cli_opt {
    const char *name; /* "--epochs" */
    cli_opt_kind kind;
    void *target;
    const char *help;
    double min, max;       /* CLI_INT / CLI_FLOAT bounds */
    const char *choices;   /* CLI_CHOICE */
    const char *metavar;   /* shown in --help */
} cli_opt;

enum { CLI_MAX_POSITIONAL = 8 };

typedef struct cli_parsed {
    const char *positional[CLI_MAX_POSITIONAL];
    int n_positional;
    bool help;
} cli_parsed;

/* Parses argv[0..argc) (argv[0] is the first argument after the subcommand). */
ag_status cli_args_parse(int argc, char **argv, const cli_opt *opts, int n_opts,
                         cli_parsed *out);
void cli_args_help(const char *usage, const char *about, const cli_opt *opts, int n_opts);

#endif
