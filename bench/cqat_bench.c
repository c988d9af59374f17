/* cqat_bench.c — cqat's side of the side-by-side benchmark (bench/compare.py).
 *
 *     build/bench/cqat_bench --what float-train --batch 64 --threads 2 [--seconds 3]
 *
 * Measures one figure on refcnn and prints one JSON line:
 * {"what", "batch", "threads", "samples_per_s", "peak_rss_mb"}.
 *   float-train   full SGD steps (forward, cross-entropy, backward, optimizer step)
 *   float-infer   eval-mode forward without recording
 * Inputs are Fashion-MNIST test images, normalized as in training; every step runs
 * on a fresh batch of them, exactly as bench/torch_bench.py does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench/bench_cases.h"
#include "tools/args.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Runs the case over its batches (3 warm-up calls first) for about `seconds`. */
static ag_status time_case(bench_case *c, double seconds, double *samples_per_s)
{
    ag_status st = AG_OK;
    for (int i = 0; i < 3 && st == AG_OK; i++)
        st = c->run(c, i);
    int64_t n = 0;
    double t0 = now_s(), el = 0.0;
    for (int64_t i = 0; st == AG_OK && el < seconds; i++) {
        st = c->run(c, i);
        n += c->batch;
        el = now_s() - t0;
    }
    *samples_per_s = el > 0 ? (double)n / el : 0.0;
    return st;
}

int main(int argc, char **argv)
{
    const char *what = NULL;
    int64_t batch = 64, threads = 2;
    double seconds = 3.0;
    cli_opt opts[] = {
        {"--what", CLI_CHOICE, &what, "the figure", 0, 0, BENCH_CASE_NAMES, NULL},
        {"--batch", CLI_INT, &batch, "batch size", 1, 65536, NULL, NULL},
        {"--threads", CLI_INT, &threads, "threads", 1, 1024, NULL, NULL},
        {"--seconds", CLI_FLOAT, &seconds, "time to measure for", 0.01, 3600, NULL, NULL},
    };
    int n_opts = (int)(sizeof opts / sizeof opts[0]);
    cli_parsed p;
    if (cli_args_parse(argc - 1, argv + 1, opts, n_opts, &p) != AG_OK) {
        fprintf(stderr, "cqat_bench: %s\n", ag_last_error());
        return 1;
    }
    if (p.help) {
        cli_args_help("cqat_bench --what FIGURE [--batch N] [--threads N]",
                      "One benchmark figure of cqat on refcnn, as JSON.", opts, n_opts);
        return 0;
    }
    if (!what) {
        fprintf(stderr, "cqat_bench: --what is required (see --help)\n");
        return 1;
    }
    ag_set_num_threads((int)threads);
    bench_case c;
    double sps = 0.0;
    ag_status st = bench_case_init(&c, what, (int32_t)batch);
    if (st == AG_OK)
        st = time_case(&c, seconds, &sps);
    if (st != AG_OK) {
        fprintf(stderr, "cqat_bench: %s\n", ag_last_error());
        return 1;
    }
    bench_case_deinit(&c);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"what\": \"%s\", \"batch\": %lld, \"threads\": %lld, \"samples_per_s\": %.1f, "
           "\"peak_rss_mb\": %.1f, \"engine\": \"cqat\"}\n",
           what, (long long)batch, (long long)threads, sps, (double)ru.ru_maxrss / 1024.0);
    return 0;
}
