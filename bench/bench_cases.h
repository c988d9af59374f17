/* bench_cases.h — the measured workloads of cqat_bench, one function per figure. */
#ifndef CQAT_BENCH_CASES_H
#define CQAT_BENCH_CASES_H

#include "data/data.h"
#include "nn/nn.h"
#include "optim/optim.h"
#include "qat/qconfig.h"
#include "quantized/q8.h"

#define BENCH_CASE_NAMES "float-train|qat-train|float-infer|qat-infer|int8-infer"

typedef struct bench_case bench_case;
struct bench_case {
    ag_status (*run)(bench_case *c, int64_t i); /* one step on batch i */
    int32_t batch;
    nn_module *model;
    qat_qconfig_map *map; /* qat cases */
    q8_model *q8;         /* int8-infer */
    float *logits;        /* int8-infer output (batch, 10) */
    optim_optimizer *opt;
    nn_param_list params;
    ag_ctx *ctx;
    data_dataset test;
    data_loader loader;
    float *images;   /* (batch, 1, 28, 28) */
    int32_t *labels; /* (batch) */
};

ag_status bench_case_init(bench_case *c, const char *what, int32_t batch);
void bench_case_deinit(bench_case *c);

#endif
