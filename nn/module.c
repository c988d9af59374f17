/* module.c — the module tree: registration, walks, lookups, replacement, hooks. */
#include "nn/nn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void nn_module_init(nn_module *m, const nn_module_vtbl *vt)
{
    m->vt = vt;
    m->training = true;
}

/* Grows an array of `elem` bytes to hold one more item; false on OOM. */
static bool grow(void **items, int32_t n, int32_t *cap, size_t elem)
{
    if (n < *cap)
        return true;
    int32_t ncap = *cap ? 2 * *cap : 4;
    void *p = realloc(*items, (size_t)ncap * elem);
    if (!p)
        return false;
    *items = p;
    *cap = ncap;
    return true;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

ag_status nn_module_add_child(nn_module *m, const char *name, nn_module *child)
{
    char *nm = dup_str(name);
    if (!child || !nm || !grow((void **)&m->children, m->n_children, &m->cap_children,
                               sizeof *m->children)) {
        free(nm);
        nn_module_free(child);
        return ag_error(AG_ERR_NOMEM, "module: out of memory adding child '%s'", name);
    }
    child->training = m->training;
    m->children[m->n_children++] = (nn_named_module){nm, child};
    return AG_OK;
}

static ag_status add_tensor(nn_named_tensor **items, int32_t *n, int32_t *cap,
                            const char *name, ag_tensor *t)
{
    char *nm = dup_str(name);
    if (!t || !nm || !grow((void **)items, *n, cap, sizeof **items)) {
        free(nm);
        ag_tensor_free(t);
        return ag_error(AG_ERR_NOMEM, "module: out of memory adding '%s'", name);
    }
    (*items)[(*n)++] = (nn_named_tensor){nm, t};
    return AG_OK;
}

ag_status nn_module_add_param(nn_module *m, const char *name, ag_tensor *t)
{
    return add_tensor(&m->params, &m->n_params, &m->cap_params, name, t);
}

ag_status nn_module_add_buffer(nn_module *m, const char *name, ag_tensor *t)
{
    return add_tensor(&m->buffers, &m->n_buffers, &m->cap_buffers, name, t);
}

void nn_module_free(nn_module *m)
{
    if (!m)
        return;
    if (m->vt && m->vt->destroy)
        m->vt->destroy(m);
    for (int32_t i = 0; i < m->n_children; i++) {
        nn_module_free(m->children[i].m);
        free(m->children[i].name);
    }
    for (int32_t i = 0; i < m->n_params; i++) {
        ag_tensor_free(m->params[i].t);
        free(m->params[i].name);
    }
    for (int32_t i = 0; i < m->n_buffers; i++) {
        ag_tensor_free(m->buffers[i].t);
        free(m->buffers[i].name);
    }
    free(m->children);
    free(m->params);
    free(m->buffers);
    free(m);
}

/* ---- forward and hooks ---- */

static _Thread_local nn_trace_fn trace_fn;
static _Thread_local void *trace_ud;

void nn_trace_set(nn_trace_fn fn, void *ud)
{
    trace_fn = fn;
    trace_ud = ud;
}

void nn_trace_report(nn_module *m, ag_tensor *const *in, int32_t n_in, ag_tensor *out)
{
    if (trace_fn && out)
        trace_fn(trace_ud, m, in, n_in, out);
}

ag_tensor *nn_post_process(nn_module *m, ag_ctx *ctx, ag_tensor *y)
{
    if (!y || !m->post)
        return y;
    return m->post->vt->forward(m->post, ctx, y);
}

ag_tensor *nn_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    if (!x)
        return NULL;
    if (!m->vt->forward) {
        ag_error(AG_ERR_STATE, "%s: this module is not called with one input",
                 m->vt->type);
        return NULL;
    }
    ag_tensor *y = nn_post_process(m, ctx, m->vt->forward(m, ctx, x));
    nn_trace_report(m, &x, 1, y);
    return y;
}

void nn_module_train(nn_module *m, bool training)
{
    m->training = training;
    for (int32_t i = 0; i < m->n_children; i++)
        nn_module_train(m->children[i].m, training);
    if (m->vt->on_train)
        m->vt->on_train(m, training);
}

bool nn_module_is(const nn_module *m, const char *type)
{
    return m && strcmp(m->vt->type, type) == 0;
}

const char *nn_module_type(const nn_module *m) { return m->vt->type; }

/* ---- lookups ---- */

/* The child named by the first component of path; *rest points after it. */
static nn_named_module *child_slot(nn_module *m, const char *path, const char **rest)
{
    const char *dot = strchr(path, '.');
    size_t len = dot ? (size_t)(dot - path) : strlen(path);
    *rest = dot ? dot + 1 : NULL;
    for (int32_t i = 0; i < m->n_children; i++)
        if (strlen(m->children[i].name) == len && strncmp(m->children[i].name, path, len) == 0)
            return &m->children[i];
    return NULL;
}

static nn_named_module *find_slot(nn_module *m, const char *path)
{
    const char *rest = NULL;
    nn_named_module *slot = child_slot(m, path, &rest);
    while (slot && rest) {
        slot = child_slot(slot->m, rest, &rest);
    }
    return slot;
}

nn_module *nn_module_find(nn_module *m, const char *path)
{
    if (!path || !*path)
        return m;
    nn_named_module *slot = find_slot(m, path);
    return slot ? slot->m : NULL;
}

static ag_tensor *find_named(nn_named_tensor *items, int32_t n, const char *name)
{
    for (int32_t i = 0; i < n; i++)
        if (strcmp(items[i].name, name) == 0)
            return items[i].t;
    return NULL;
}

ag_tensor *nn_module_param(nn_module *m, const char *name)
{
    return find_named(m->params, m->n_params, name);
}

ag_tensor *nn_module_buffer(nn_module *m, const char *name)
{
    return find_named(m->buffers, m->n_buffers, name);
}

/* The post hook is also a child: keep the pointer in step when that child changes. */
static void sync_post(nn_module *parent, nn_named_module *slot)
{
    if (strcmp(slot->name, "activation_post_process") == 0)
        parent->post = slot->m;
}

static nn_module *parent_of(nn_module *root, const char *path, const char **leaf)
{
    const char *dot = strrchr(path, '.');
    if (!dot) {
        *leaf = path;
        return root;
    }
    char buf[512];
    size_t len = (size_t)(dot - path);
    if (len >= sizeof buf)
        return NULL;
    memcpy(buf, path, len);
    buf[len] = '\0';
    *leaf = dot + 1;
    return nn_module_find(root, buf);
}

ag_status nn_module_swap(nn_module *root, const char *path, nn_module *repl, nn_module **old)
{
    const char *leaf = NULL;
    nn_module *parent = path && *path ? parent_of(root, path, &leaf) : NULL;
    nn_named_module *slot = NULL;
    if (parent)
        for (int32_t i = 0; i < parent->n_children; i++)
            if (strcmp(parent->children[i].name, leaf) == 0)
                slot = &parent->children[i];
    if (!slot)
        return ag_error(AG_ERR_ARG, "no module named '%s'", path ? path : "(null)");
    *old = slot->m;
    repl->training = slot->m->training;
    slot->m = repl;
    sync_post(parent, slot);
    return AG_OK;
}

ag_status nn_module_replace(nn_module *root, const char *path, nn_module *repl)
{
    nn_module *old = NULL;
    ag_status st = nn_module_swap(root, path, repl, &old);
    if (st != AG_OK) {
        nn_module_free(repl);
        return st;
    }
    nn_module_free(old);
    return AG_OK;
}

/* ---- walks ---- */

typedef struct path_buf {
    char s[1024];
    size_t len;
} path_buf;

/* Appends ".name" (or "name" at the root) and returns the previous length. */
static size_t path_push(path_buf *p, const char *name)
{
    size_t old = p->len;
    int n = snprintf(p->s + p->len, sizeof p->s - p->len, old ? ".%s" : "%s", name);
    p->len += n > 0 ? (size_t)n : 0;
    if (p->len >= sizeof p->s)
        p->len = sizeof p->s - 1;
    return old;
}

static void path_pop(path_buf *p, size_t old)
{
    p->len = old;
    p->s[old] = '\0';
}

static bool walk_modules(nn_module *m, path_buf *p, nn_module_visit_fn fn, void *ud)
{
    if (!fn(ud, p->s, m))
        return false;
    for (int32_t i = 0; i < m->n_children; i++) {
        size_t old = path_push(p, m->children[i].name);
        bool go = walk_modules(m->children[i].m, p, fn, ud);
        path_pop(p, old);
        if (!go)
            return false;
    }
    return true;
}

void nn_module_walk(nn_module *m, nn_module_visit_fn fn, void *ud)
{
    path_buf p = {.s = "", .len = 0};
    walk_modules(m, &p, fn, ud);
}

static bool walk_state(nn_module *m, path_buf *p, nn_state_visit_fn fn, void *ud)
{
    for (int32_t i = 0; i < m->n_params; i++) {
        size_t old = path_push(p, m->params[i].name);
        bool go = fn(ud, p->s, m->params[i].t, NN_STATE_PARAM);
        path_pop(p, old);
        if (!go)
            return false;
    }
    for (int32_t i = 0; i < m->n_buffers; i++) {
        size_t old = path_push(p, m->buffers[i].name);
        bool go = fn(ud, p->s, m->buffers[i].t, NN_STATE_BUFFER);
        path_pop(p, old);
        if (!go)
            return false;
    }
    for (int32_t i = 0; i < m->n_children; i++) {
        size_t old = path_push(p, m->children[i].name);
        bool go = walk_state(m->children[i].m, p, fn, ud);
        path_pop(p, old);
        if (!go)
            return false;
    }
    return true;
}

void nn_state_foreach(nn_module *m, nn_state_visit_fn fn, void *ud)
{
    path_buf p = {.s = "", .len = 0};
    walk_state(m, &p, fn, ud);
}

typedef struct param_collect {
    nn_param_list *l;
    int32_t cap;
    bool oom;
} param_collect;

static bool collect_param(void *ud, const char *key, ag_tensor *t, nn_state_kind kind)
{
    param_collect *c = ud;
    if (kind != NN_STATE_PARAM)
        return true;
    nn_param_list *l = c->l;
    if (l->n == c->cap) {
        int32_t ncap = c->cap ? 2 * c->cap : 16;
        ag_tensor **p = realloc(l->params, (size_t)ncap * sizeof *p);
        if (p)
            l->params = p;
        char **nm = realloc(l->names, (size_t)ncap * sizeof *nm);
        if (nm)
            l->names = nm;
        if (!p || !nm) {
            c->oom = true;
            return false;
        }
        c->cap = ncap;
    }
    l->names[l->n] = dup_str(key);
    if (!l->names[l->n]) {
        c->oom = true;
        return false;
    }
    l->params[l->n++] = t;
    return true;
}

ag_status nn_param_list_get(nn_module *m, nn_param_list *out)
{
    memset(out, 0, sizeof *out);
    param_collect c = {out, 0, false};
    nn_state_foreach(m, collect_param, &c);
    if (c.oom) {
        nn_param_list_deinit(out);
        return ag_error(AG_ERR_NOMEM, "out of memory listing parameters");
    }
    return AG_OK;
}

void nn_param_list_deinit(nn_param_list *l)
{
    for (int32_t i = 0; i < l->n; i++)
        free(l->names[i]);
    free(l->names);
    free(l->params);
    memset(l, 0, sizeof *l);
}

static bool count_param(void *ud, const char *key, ag_tensor *t, nn_state_kind kind)
{
    (void)key;
    if (kind == NN_STATE_PARAM)
        *(int64_t *)ud += t->numel;
    return true;
}

int64_t nn_param_count(nn_module *m)
{
    int64_t n = 0;
    nn_state_foreach(m, count_param, &n);
    return n;
}

static bool zero_param_grad(void *ud, const char *key, ag_tensor *t, nn_state_kind kind)
{
    (void)ud;
    (void)key;
    if (kind == NN_STATE_PARAM)
        ag_tensor_zero_grad(t);
    return true;
}

void nn_zero_grad(nn_module *m) { nn_state_foreach(m, zero_param_grad, NULL); }
