/* args.c — strict option parsing; see args.h. */
#include "tools/args.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const cli_opt *find_opt(const cli_opt *opts, int n, const char *name, size_t len)
{
    for (int i = 0; i < n; i++)
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0)
            return &opts[i];
    return NULL;
}

static bool in_choices(const char *choices, const char *v)
{
    size_t len = strlen(v);
    const char *p = choices;
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && strncmp(p, v, n) == 0)
            return true;
        if (!bar)
            break;
        p = bar + 1;
    }
    return false;
}

static ag_status set_value(const cli_opt *o, const char *v)
{
    char *end = NULL;
    errno = 0;
    switch (o->kind) {
    case CLI_INT: {
        long long x = strtoll(v, &end, 10);
        if (!*v || *end || errno || x < o->min || x > o->max)
            return ag_error(AG_ERR_ARG, "%s: expected an integer in [%.0f, %.0f], got '%s'",
                            o->name, o->min, o->max, v);
        *(int64_t *)o->target = x;
        return AG_OK;
    }
    case CLI_FLOAT: {
        double x = strtod(v, &end);
        if (!*v || *end || errno || !isfinite(x) || x < o->min || x > o->max)
            return ag_error(AG_ERR_ARG, "%s: expected a number in [%g, %g], got '%s'", o->name,
                            o->min, o->max, v);
        *(double *)o->target = x;
        return AG_OK;
    }
    case CLI_STR:
        if (!*v)
            return ag_error(AG_ERR_ARG, "%s: empty value", o->name);
        *(const char **)o->target = v;
        return AG_OK;
    case CLI_CHOICE:
        if (!in_choices(o->choices, v))
            return ag_error(AG_ERR_ARG, "%s: expected one of %s, got '%s'", o->name, o->choices,
                            v);
        *(const char **)o->target = v;
        return AG_OK;
    case CLI_FLAG:
        *(bool *)o->target = true;
        return AG_OK;
    }
    return AG_ERR_ARG;
}

ag_status cli_args_parse(int argc, char **argv, const cli_opt *opts, int n_opts,
                         cli_parsed *out)
{
    memset(out, 0, sizeof *out);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            out->help = true;
            continue;
        }
        if (strncmp(a, "--", 2) != 0 || strcmp(a, "--") == 0) {
            if (out->n_positional == CLI_MAX_POSITIONAL)
                return ag_error(AG_ERR_ARG, "too many arguments ('%s')", a);
            out->positional[out->n_positional++] = a;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        const cli_opt *o = find_opt(opts, n_opts, a, len);
        if (!o)
            return ag_error(AG_ERR_ARG, "unknown option '%.*s' (see --help)", (int)len, a);
        if (o->kind == CLI_FLAG) {
            if (eq)
                return ag_error(AG_ERR_ARG, "%s takes no value", o->name);
            set_value(o, "");
            continue;
        }
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!v)
            return ag_error(AG_ERR_ARG, "%s: missing value", o->name);
        ag_status st = set_value(o, v);
        if (st != AG_OK)
            return st;
    }
    return AG_OK;
}

void cli_args_help(const char *usage, const char *about, const cli_opt *opts, int n_opts)
{
    printf("usage: %s\n\n%s\n\noptions:\n", usage, about);
    for (int i = 0; i < n_opts; i++) {
        const cli_opt *o = &opts[i];
        char left[64];
        const char *mv = o->metavar ? o->metavar
                         : o->kind == CLI_INT   ? "N"
                         : o->kind == CLI_FLOAT ? "X"
                         : o->kind == CLI_FLAG  ? ""
                                                : "VALUE";
        snprintf(left, sizeof left, "%s%s%s", o->name, *mv ? " " : "",
                 o->kind == CLI_CHOICE && !o->metavar ? o->choices : mv);
        printf("  %-30s %s\n", left, o->help);
    }
    printf("  %-30s %s\n", "--help", "show this help");
}
