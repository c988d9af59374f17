/* checkpoint.c — training checkpoints; see checkpoint.h. */
#include "tools/checkpoint.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/state_h5.h"

static const char *const CKPT_FORMAT = "cqat-checkpoint";

static ag_status save_optimizer(hid_t file, const optim_optimizer *opt)
{
    hid_t g = H5Gcreate2(file, "optimizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0)
        return ag_error(AG_ERR_IO, "cannot create group 'optimizer'");
    ag_status st = nn_h5_write_attr_str(g, "kind", optim_kind_name(opt));
    for (int32_t i = 0; st == AG_OK && i < optim_hparam_count(opt); i++) {
        optim_hparam h = optim_hparam_get(opt, i);
        st = nn_h5_write_attr_f64(g, h.name, h.value);
    }
    for (int32_t i = 0; st == AG_OK && i < optim_state_count(opt); i++) {
        optim_state_entry e = optim_state_get(opt, i);
        if (e.data) {
            st = nn_h5_write_floats(g, e.name, e.data, e.param->ndim, e.param->shape);
        } else {
            ag_tensor c = {.dtype = AG_I64, .ndim = 0, .numel = 1, .data = (float *)e.counter};
            st = nn_h5_write_tensor(g, e.name, &c);
        }
    }
    H5Gclose(g);
    return st;
}

static ag_status save_meta(hid_t f, const cqat_ckpt_meta *meta)
{
    ag_status st = nn_h5_write_attr_str(f, "format", CKPT_FORMAT);
    if (st == AG_OK) st = nn_h5_write_attr_i64(f, "format_version", CQAT_CKPT_VERSION);
    if (st == AG_OK) st = nn_h5_write_attr_str(f, "model_name", meta->model.name);
    if (st == AG_OK) st = nn_h5_write_attr_i64(f, "in_channels", meta->model.in_channels);
    if (st == AG_OK) st = nn_h5_write_attr_i64(f, "in_h", meta->model.in_h);
    if (st == AG_OK) st = nn_h5_write_attr_i64(f, "in_w", meta->model.in_w);
    if (st == AG_OK) st = nn_h5_write_attr_i64(f, "num_classes", meta->model.num_classes);
    if (st == AG_OK) st = nn_h5_write_attr_str(f, "kind", meta->kind);
    if (st == AG_OK) st = nn_h5_write_attr_i64(f, "epoch", meta->epoch);
    if (st == AG_OK) st = nn_h5_write_attr_i64(f, "step", meta->step);
    if (st == AG_OK) st = nn_h5_write_attr_str(f, "train_args", meta->train_args);
    if (st == AG_OK) st = nn_h5_write_attr_str(f, "extra", meta->extra);
    if (st == AG_OK) {
        /* PCG32 state and increment, as int64 bit patterns, in a group so that the root
         * holds only state_dict keys. */
        hid_t g = H5Gcreate2(f, "train_state", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        ag_tensor r = {.dtype = AG_I64, .ndim = 1, .shape = {2}, .numel = 2,
                       .data = (float *)(uintptr_t)(const void *)&meta->rng};
        st = g < 0 ? ag_error(AG_ERR_IO, "cannot create group 'train_state'")
                   : nn_h5_write_tensor(g, "rng", &r);
        if (g >= 0)
            H5Gclose(g);
    }
    return st;
}

ag_status cqat_ckpt_save(const char *path, nn_module *m, const optim_optimizer *opt,
                         const cqat_ckpt_meta *meta)
{
    nn_h5_writer w;
    ag_status st = nn_h5_writer_open(&w, path);
    if (st != AG_OK)
        return st;
    st = nn_state_save_h5(w.file, m);
    if (st == AG_OK && opt)
        st = save_optimizer(w.file, opt);
    if (st == AG_OK)
        st = save_meta(w.file, meta);
    if (st != AG_OK) {
        ag_error_context("%s", path);
        nn_h5_writer_abort(&w);
        return st;
    }
    return nn_h5_writer_commit(&w);
}

ag_status cqat_ckpt_probe(const char *path, bool *is_ckpt)
{
    hid_t f = nn_h5_open_read(path);
    if (f < 0)
        return ag_last_status();
    *is_ckpt = nn_h5_has_attr(f, "format");
    H5Fclose(f);
    return AG_OK;
}

/* The model configuration a checkpoint may declare. The model is built from it before
 * its state is read, so a crafted file must not be able to ask for a huge one (refcnn's
 * fc1 grows with in_h * in_w: 8192x8192 would be 2^33 parameters). The data loader
 * takes at most 3 channels; 512x512 inputs keep the largest zoo model near 2^26
 * parameters. */
enum { CKPT_MAX_CHANNELS = 3, CKPT_MAX_SIDE = 512, CKPT_MAX_CLASSES = 1 << 16 };

static ag_status read_i32_attr(hid_t f, const char *path, const char *name, int32_t max,
                               int32_t *v)
{
    int64_t x = 0;
    ag_status st = nn_h5_read_attr_i64(f, path, name, &x);
    if (st == AG_OK && (x < 1 || x > max))
        st = ag_error(AG_ERR_FORMAT, "%s: attribute '%s' = %" PRId64 " is outside [1, %d]",
                      path, name, x, (int)max);
    if (st == AG_OK)
        *v = (int32_t)x;
    return st;
}

static ag_status read_meta(hid_t f, const char *path, cqat_ckpt_meta *meta)
{
    char fmt[64] = "";
    int64_t version = 0;
    memset(meta, 0, sizeof *meta);
    ag_status st = nn_h5_read_attr_str(f, path, "format", fmt, sizeof fmt);
    if (st == AG_OK && strcmp(fmt, CKPT_FORMAT) != 0)
        st = ag_error(AG_ERR_FORMAT, "%s: format '%s' is not a cqat checkpoint", path, fmt);
    if (st == AG_OK)
        st = nn_h5_read_attr_i64(f, path, "format_version", &version);
    if (st == AG_OK && version != CQAT_CKPT_VERSION)
        st = ag_error(AG_ERR_FORMAT,
                      "%s: checkpoint format version %" PRId64 " (this cqat reads version %d)",
                      path, version, CQAT_CKPT_VERSION);
    if (st == AG_OK)
        st = nn_h5_read_attr_str(f, path, "model_name", meta->model.name, sizeof meta->model.name);
    if (st == AG_OK)
        st = read_i32_attr(f, path, "in_channels", CKPT_MAX_CHANNELS, &meta->model.in_channels);
    if (st == AG_OK) st = read_i32_attr(f, path, "in_h", CKPT_MAX_SIDE, &meta->model.in_h);
    if (st == AG_OK) st = read_i32_attr(f, path, "in_w", CKPT_MAX_SIDE, &meta->model.in_w);
    if (st == AG_OK)
        st = read_i32_attr(f, path, "num_classes", CKPT_MAX_CLASSES, &meta->model.num_classes);
    if (st == AG_OK) st = nn_h5_read_attr_str(f, path, "kind", meta->kind, sizeof meta->kind);
    if (st == AG_OK) st = nn_h5_read_attr_i64(f, path, "epoch", &meta->epoch);
    if (st == AG_OK) st = nn_h5_read_attr_i64(f, path, "step", &meta->step);
    if (st == AG_OK)
        st = nn_h5_read_attr_str(f, path, "train_args", meta->train_args, sizeof meta->train_args);
    if (st == AG_OK)
        st = nn_h5_read_attr_str(f, path, "extra", meta->extra, sizeof meta->extra);
    if (st == AG_OK && (meta->epoch < 0 || meta->step < 0))
        st = ag_error(AG_ERR_FORMAT, "%s: negative epoch or step", path);
    if (st == AG_OK) {
        ag_tensor r = {.dtype = AG_I64, .ndim = 1, .shape = {2}, .numel = 2,
                       .data = (float *)(void *)&meta->rng};
        st = nn_h5_read_tensor(f, path, "train_state/rng", &r);
        if (st == AG_OK && (meta->rng.inc & 1u) == 0)
            st = ag_error(AG_ERR_FORMAT, "%s: 'rng' is not a valid PCG32 state", path);
    }
    return st;
}

ag_status cqat_ckpt_read_meta(const char *path, cqat_ckpt_meta *meta)
{
    hid_t f = nn_h5_open_read(path);
    if (f < 0)
        return ag_last_status();
    ag_status st = read_meta(f, path, meta);
    H5Fclose(f);
    return st;
}

/* Reads every optimizer entry into staging buffers; copies only if all are present. */
static ag_status load_optimizer(hid_t f, const char *path, optim_optimizer *opt)
{
    if (!nn_h5_has_object(f, "optimizer"))
        return ag_error(AG_ERR_FORMAT, "%s: no optimizer state (not saved by cqat train?)", path);
    hid_t g = H5Gopen2(f, "optimizer", H5P_DEFAULT);
    char kind[32] = "";
    ag_status st = g < 0 ? ag_error(AG_ERR_FORMAT, "%s: cannot open 'optimizer'", path)
                         : nn_h5_read_attr_str(g, path, "kind", kind, sizeof kind);
    if (st == AG_OK && strcmp(kind, optim_kind_name(opt)) != 0)
        st = ag_error(AG_ERR_ARG, "%s: the optimizer state is %s, this run uses %s", path, kind,
                      optim_kind_name(opt));
    int32_t n = optim_state_count(opt);
    void **bufs = calloc((size_t)(n ? n : 1), sizeof *bufs);
    if (st == AG_OK && !bufs)
        st = ag_error(AG_ERR_NOMEM, "%s: out of memory", path);
    for (int32_t i = 0; st == AG_OK && i < n; i++) {
        optim_state_entry e = optim_state_get(opt, i);
        size_t bytes = (size_t)e.numel * (e.data ? sizeof(float) : sizeof(int64_t));
        bufs[i] = malloc(bytes ? bytes : 1);
        if (!bufs[i]) {
            st = ag_error(AG_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        ag_tensor t = {.dtype = e.data ? AG_F32 : AG_I64, .ndim = 0, .numel = e.numel,
                       .data = bufs[i]};
        if (e.data) { /* buffers are saved with their parameter's shape */
            t.ndim = e.param->ndim;
            memcpy(t.shape, e.param->shape, sizeof t.shape);
        }
        st = nn_h5_read_tensor(g, path, e.name, &t);
        if (st != AG_OK)
            ag_error_context("optimizer");
    }
    for (int32_t i = 0; st == AG_OK && i < n; i++) {
        optim_state_entry e = optim_state_get(opt, i);
        if (e.data)
            memcpy(e.data, bufs[i], (size_t)e.numel * sizeof(float));
        else
            memcpy(e.counter, bufs[i], sizeof(int64_t));
    }
    for (int32_t i = 0; bufs && i < n; i++)
        free(bufs[i]);
    free(bufs);
    if (g >= 0)
        H5Gclose(g);
    return st;
}

ag_status cqat_ckpt_load(const char *path, nn_module *m, optim_optimizer *opt)
{
    hid_t f = nn_h5_open_read(path);
    if (f < 0)
        return ag_last_status();
    ag_status st = nn_state_load_h5(f, path, m, NULL);
    /* The model was only touched if its load succeeded; the optimizer likewise. A
     * failure in the optimizer after a model load leaves the model loaded: callers
     * treat any failure as fatal for the run. */
    if (st == AG_OK && opt)
        st = load_optimizer(f, path, opt);
    H5Fclose(f);
    return st;
}
