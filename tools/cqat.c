/* cqat.c — the command line: `cqat <command> [options]`, `cqat <command> --help`. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/args.h"
#include "tools/commands.h"

int cqat_cmd_eval(int argc, char **argv)
{
    const char *model = NULL, *weights = NULL, *data = NULL, *qconfig = NULL;
    int64_t limit = 0, threads = 0;
    bool json = false, qat = false;
    cli_opt opts[] = {
        {"--model", CLI_STR, &model, "model name, for a plain state_dict", 0, 0, NULL, "NAME"},
        {"--weights", CLI_STR, &weights, "a plain state_dict file (with --model)", 0, 0, NULL, "FILE"},
        {"--qat", CLI_FLAG, &qat, "the state_dict is QAT-prepared (e.g. from PyTorch)", 0, 0, NULL, NULL},
        {"--qconfig", CLI_STR, &qconfig, "with --qat: the qconfig (default: guessed from the file)", 0, 0, NULL, "NAME"},
        {"--data", CLI_STR, &data, "data folder (default: Debian's Fashion-MNIST)", 0, 0, NULL, "DIR"},
        {"--limit", CLI_INT, &limit, "use only the first N test images", 0, 1e12, NULL, NULL},
        {"--threads", CLI_INT, &threads, "threads", 0, 1024, NULL, NULL},
        {"--json", CLI_FLAG, &json, "print a JSON summary as the last line", 0, 0, NULL, NULL},
    };
    int n_opts = (int)(sizeof opts / sizeof opts[0]);
    cli_parsed p;
    if (cli_args_parse(argc, argv, opts, n_opts, &p) != AG_OK)
        return cqat_fail("eval");
    if (p.help) {
        cli_args_help("cqat eval CHECKPOINT.h5 | cqat eval --model NAME [--qat] --weights STATE_DICT.h5",
                      "Test-set accuracy and loss of a float or QAT checkpoint, or of a PyTorch\n"
                      "state_dict (QAT models are evaluated with fake quant on, observers off).",
                      opts, n_opts);
        return 0;
    }
    if (p.n_positional > 1 || (p.n_positional == 1 && weights))
        return cqat_fail_msg("eval", "give one file: CHECKPOINT.h5 or --weights FILE");
    const char *path = p.n_positional ? p.positional[0] : weights;
    if (!path)
        return cqat_fail_msg("eval", "no file to evaluate (see --help)");
    ag_set_num_threads((int)threads);
    if (cqat_is_q8_file(path))
        return cqat_cmd_eval_q8(path, data, limit, json);
    return cqat_cmd_eval_file(path, model, qat, qconfig, data, limit, json);
}

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *about;
} command;

static const command COMMANDS[] = {
    {"train", cqat_cmd_train, "train a float model (checkpoints in HDF5)"},
    {"qat", cqat_cmd_qat, "quantization-aware fine-tuning of float weights"},
    {"eval", cqat_cmd_eval, "test-set accuracy of a checkpoint, state_dict or int8 model"},
    {"convert", cqat_cmd_convert, "freeze a QAT model into an integer-only model"},
    {"calibrate", cqat_cmd_calibrate, "static post-training quantization with calibration"},
    {"quantize-dynamic", cqat_cmd_quantize_dynamic, "dynamic quantization of Linear layers"},
    {"infer", cqat_cmd_infer, "run an int8 model on images (IDX or HDF5)"},
    {"inspect", cqat_cmd_inspect, "what a model or checkpoint file holds"},
    {"compare", cqat_cmd_compare, "QAT model vs int8 model: predictions, integers, per layer"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: cqat <command> [options]   (cqat <command> --help for its options)\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        fprintf(f, "  %-18s %s\n", COMMANDS[i].name, COMMANDS[i].about);
}

/* libgomp reads OMP_WAIT_POLICY once, when it is loaded. Its default lets idle workers
 * spin for a long time; on a shared machine (or next to BLAS threads) the spinning
 * steals the cores the work needs and a training step runs several times slower. So,
 * unless the user chose a policy, cqat asks for passive waiting and starts itself
 * again with it (exec keeps the pid, arguments and the rest of the environment). */
static void ensure_passive_wait(char **argv)
{
    if (getenv("OMP_WAIT_POLICY"))
        return;
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    /* The resolved path, not "/proc/self/exe" itself: under valgrind that link is the
     * tool's binary (readlink is answered with the program's own path). */
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0 || (size_t)n >= sizeof self - 1)
        return;
    self[n] = '\0';
    execv(self, argv); /* returns only on failure: then run as we are */
}

int main(int argc, char **argv)
{
    ensure_passive_wait(argv);
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress lines reach logs as they happen */
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (strcmp(argv[1], COMMANDS[i].name) == 0)
            return COMMANDS[i].run(argc - 2, argv + 2);
    fprintf(stderr, "cqat: unknown command '%s' (cqat --help lists the commands)\n", argv[1]);
    return 2;
}
