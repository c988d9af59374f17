/* bench_cases.c — float training and inference steps on refcnn, as measured. */
#include "bench/bench_cases.h"

#include <stdlib.h>
#include <string.h>

#include "nn/zoo.h"
#include "qat/convert.h"
#include "tools/qat_model.h"

static ag_tensor *batch_input(bench_case *c, int64_t i)
{
    int32_t count = 0;
    int64_t nb = data_loader_num_batches(&c->loader);
    if (data_loader_batch(&c->loader, i % nb, c->images, c->labels, &count) != AG_OK)
        return NULL;
    ag_tensor *x = ag_ctx_tensor(c->ctx, 4, AG_SHAPE(c->batch, 1, 28, 28));
    if (x)
        memcpy(x->data, c->images, (size_t)x->numel * sizeof(float));
    return x;
}

static ag_status run_float_train(bench_case *c, int64_t i)
{
    ag_tensor *x = batch_input(c, i);
    ag_tensor *loss = ag_cross_entropy(c->ctx, nn_forward(c->model, c->ctx, x), c->labels, 0.0f);
    ag_status st = ag_backward(c->ctx, loss);
    if (st == AG_OK)
        st = optim_step(c->opt);
    optim_zero_grad(c->opt);
    ag_ctx_reset(c->ctx);
    return st;
}

static ag_status run_float_infer(bench_case *c, int64_t i)
{
    ag_no_grad_begin(c->ctx);
    ag_tensor *y = nn_forward(c->model, c->ctx, batch_input(c, i));
    ag_no_grad_end(c->ctx);
    ag_ctx_reset(c->ctx);
    return y ? AG_OK : ag_last_status();
}

static ag_status run_int8_infer(bench_case *c, int64_t i)
{
    int32_t count = 0;
    int64_t nb = data_loader_num_batches(&c->loader);
    ag_status st = data_loader_batch(&c->loader, i % nb, c->images, c->labels, &count);
    if (st == AG_OK && q8_model_run(c->q8, c->images, count, c->logits) != Q8_OK)
        st = ag_error(AG_ERR_FORMAT, "%s", q8_last_error());
    return st;
}

/* refcnn fused and prepared with the default fbgemm QAT qconfig (BENCHMARK.md's QAT
 * recipe), a few training steps so that observers and scales hold real ranges. */
static ag_status make_qat(bench_case *c, int32_t batch)
{
    nn_zoo_config cfg;
    nn_zoo_config_default("refcnn", &cfg);
    cqat_qat_spec spec = {.qconfig = "fbgemm-qat", .bits_weight = 8, .bits_activation = 8,
                          .freeze_bn_after = -1, .freeze_observers_after = -1};
    nn_module_free(c->model);
    c->model = NULL;
    ag_status st = cqat_qat_build(&cfg, &spec, NULL, &c->model, &c->map);
    if (st == AG_OK)
        st = nn_param_list_get(c->model, &c->params);
    optim_sgd_args a = {.lr = 0.01, .momentum = 0.9, .weight_decay = 5e-4};
    if (st == AG_OK && !(c->opt = optim_sgd_new(c->params.params,
                                                 (const char *const *)c->params.names,
                                                 c->params.n, &a)))
        st = ag_last_status();
    for (int64_t i = 0; st == AG_OK && i < 8; i++)
        st = run_float_train(c, i);
    (void)batch;
    return st;
}

ag_status bench_case_init(bench_case *c, const char *what, int32_t batch)
{
    memset(c, 0, sizeof *c);
    c->batch = batch;
    nn_zoo_config cfg;
    ag_rng rng;
    ag_rng_seed(&rng, 0, 1);
    data_transform tf = data_transform_fashion_mnist();
    ag_status st = nn_zoo_config_default("refcnn", &cfg);
    if (st == AG_OK)
        st = data_fashion_mnist_load(NULL, false, &c->test);
    if (st == AG_OK)
        st = data_loader_init(&c->loader, &c->test, batch, false, true, 0, &tf);
    if (st != AG_OK)
        return st;
    c->images = malloc((size_t)batch * 28 * 28 * sizeof(float));
    c->labels = malloc((size_t)batch * sizeof(int32_t));
    c->ctx = ag_ctx_new();
    c->model = nn_zoo_new(&cfg, &rng);
    if (!c->images || !c->labels || !c->ctx || !c->model)
        return ag_error(AG_ERR_NOMEM, "bench: out of memory");
    if (strcmp(what, "float-train") == 0) {
        st = nn_param_list_get(c->model, &c->params);
        optim_sgd_args a = {.lr = 0.01, .momentum = 0.9, .weight_decay = 5e-4};
        if (st == AG_OK && !(c->opt = optim_sgd_new(c->params.params,
                                                     (const char *const *)c->params.names,
                                                     c->params.n, &a)))
            st = ag_last_status();
        c->run = run_float_train;
    } else if (strcmp(what, "float-infer") == 0) {
        nn_module_eval(c->model);
        c->run = run_float_infer;
    } else if (strcmp(what, "qat-train") == 0) {
        st = make_qat(c, batch);
        c->run = run_float_train; /* the same step: the fake quants are in the modules */
    } else if (strcmp(what, "qat-infer") == 0 || strcmp(what, "int8-infer") == 0) {
        st = make_qat(c, batch);
        if (st == AG_OK) {
            qat_enable_observer_all(c->model, false);
            qat_freeze_bn_stats(c->model);
            nn_module_eval(c->model);
        }
        c->run = run_float_infer;
        if (st == AG_OK && strcmp(what, "int8-infer") == 0) {
            qat_convert_opts o = {.in_channels = 1, .in_h = 28, .in_w = 28};
            c->q8 = qat_convert(c->model, &o);
            c->logits = malloc((size_t)batch * 10 * sizeof *c->logits);
            if (!c->q8 || !c->logits)
                st = c->q8 ? ag_error(AG_ERR_NOMEM, "bench: out of memory") : ag_last_status();
            else
                st = q8_model_reserve(c->q8, batch) == Q8_OK ? AG_OK : AG_ERR_NOMEM;
            c->run = run_int8_infer;
        }
    } else {
        st = ag_error(AG_ERR_ARG, "bench: unknown case '%s'", what);
    }
    return st;
}

void bench_case_deinit(bench_case *c)
{
    q8_model_free(c->q8);
    free(c->logits);
    optim_free(c->opt);
    nn_param_list_deinit(&c->params);
    nn_module_free(c->model);
    qat_qconfig_map_free(c->map);
    ag_ctx_free(c->ctx);
    data_loader_deinit(&c->loader);
    data_dataset_deinit(&c->test);
    free(c->images);
    free(c->labels);
}
