/* nn.h — the module tree: named children, parameters and buffers, as PyTorch's nn.Module.
 *
 * A module is a struct whose first member is an nn_module; its vtable gives the type
 * name (PyTorch's class name: "Conv2d", "BatchNorm2d", ...) and the forward. Modules
 * own their children, parameters and buffers; nn_module_free() frees the whole tree.
 *
 *     nn_zoo_config cfg;
 *     nn_zoo_config_default("refcnn", &cfg);
 *     nn_module *m = nn_zoo_new(&cfg, &rng);            // a model from the zoo (nn/zoo.h)
 *     ag_tensor *logits = nn_forward(m, ctx, x);        // runs hooks too (QAT)
 *     nn_state_foreach(m, visit, ud);                   // "conv1.weight", "bn1.running_mean"...
 *     nn_module_replace(m, "conv1", new_conv);          // swap a child by dotted path
 *
 * Names follow PyTorch exactly: a walk yields the dotted paths of named_modules(), and
 * the state keys are those of state_dict() in the same order (a module's parameters,
 * then its buffers, then its children, recursively), so weights move between cqat and
 * PyTorch by name with the same layouts (conv OIHW, linear [out, in]).
 *
 * Hooks: a module may carry an output post-process module (PyTorch's
 * activation_post_process: an observer or FakeQuantize installed by qat/prepare). It is
 * a registered child named "activation_post_process" (so its state appears under that
 * key, as in PyTorch), and nn_forward() applies it to the module's output.
 */
#ifndef CQAT_NN_H
#define CQAT_NN_H

#include <stdbool.h>
#include <stdint.h>

#include "autograd/ag.h"

typedef struct nn_module nn_module;

typedef struct nn_module_vtbl {
    const char *type; /* PyTorch class name */
    /* One-input forward; NULL for modules that are called otherwise (FloatFunctional). */
    ag_tensor *(*forward)(nn_module *m, ag_ctx *ctx, ag_tensor *x);
    /* Frees what the concrete module allocated beyond the base (may be NULL). */
    void (*destroy)(nn_module *m);
    /* Called by nn_module_train() after the flag changed (may be NULL). */
    void (*on_train)(nn_module *m, bool training);
} nn_module_vtbl;

typedef struct nn_named_tensor {
    char *name;
    ag_tensor *t;
} nn_named_tensor;

typedef struct nn_named_module {
    char *name;
    nn_module *m;
} nn_named_module;

struct nn_module {
    const nn_module_vtbl *vt;
    bool training;
    nn_named_module *children;
    int32_t n_children, cap_children;
    nn_named_tensor *params;
    int32_t n_params, cap_params;
    nn_named_tensor *buffers;
    int32_t n_buffers, cap_buffers;
    /* Output hook (see above): also present in children[] as "activation_post_process". */
    nn_module *post;
    /* Configuration owned by qat/ (qconfig pointer), NULL when unset. */
    const void *qconfig;
};

/* ---- building modules ---------------------------------------------------------- */

/* Initialises the base of a freshly calloc'ed concrete module (training mode on). */
void nn_module_init(nn_module *m, const nn_module_vtbl *vt);
/* Registration takes ownership of the child / tensor. On failure (out of memory) the
 * passed object is freed too and AG_ERR_NOMEM is returned, so callers never leak. */
ag_status nn_module_add_child(nn_module *m, const char *name, nn_module *child);
ag_status nn_module_add_param(nn_module *m, const char *name, ag_tensor *t);
ag_status nn_module_add_buffer(nn_module *m, const char *name, ag_tensor *t);
void nn_module_free(nn_module *m); /* the whole subtree; NULL is fine */

/* ---- using modules ------------------------------------------------------------- */

/* Runs m's forward, then its post-process hook if any, then the trace callback. */
ag_tensor *nn_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x);
/* Applies m's post-process hook (if any) to y: for modules with their own call
 * pattern, like FloatFunctional. Returns y when there is no hook. */
ag_tensor *nn_post_process(nn_module *m, ag_ctx *ctx, ag_tensor *y);

void nn_module_train(nn_module *m, bool training); /* whole subtree, like .train(mode) */
static inline void nn_module_eval(nn_module *m) { nn_module_train(m, false); }
bool nn_module_is(const nn_module *m, const char *type);
const char *nn_module_type(const nn_module *m);

/* Lookups by dotted path ("features.0", "" = m itself); NULL if absent. */
nn_module *nn_module_find(nn_module *m, const char *path);
ag_tensor *nn_module_param(nn_module *m, const char *name);  /* own, not recursive */
ag_tensor *nn_module_buffer(nn_module *m, const char *name);
/* Replaces the module at a dotted path by `repl` (taking ownership) and frees the old
 * one. The old module's post-process hook is NOT carried over. */
ag_status nn_module_replace(nn_module *root, const char *path, nn_module *repl);
/* Detaches the child at a dotted path without freeing it (caller owns it) and puts
 * `repl` in its place. */
ag_status nn_module_swap(nn_module *root, const char *path, nn_module *repl, nn_module **old);

/* Pre-order walk over (path, module) exactly like named_modules(); stop by returning
 * false from the callback. */
typedef bool (*nn_module_visit_fn)(void *ud, const char *path, nn_module *m);
void nn_module_walk(nn_module *m, nn_module_visit_fn fn, void *ud);

/* Walk over the state: every parameter and buffer with its state_dict key. */
typedef enum nn_state_kind { NN_STATE_PARAM, NN_STATE_BUFFER } nn_state_kind;
typedef bool (*nn_state_visit_fn)(void *ud, const char *key, ag_tensor *t, nn_state_kind kind);
void nn_state_foreach(nn_module *m, nn_state_visit_fn fn, void *ud);

/* The parameters (recursive), with their keys; arrays owned by the list. */
typedef struct nn_param_list {
    ag_tensor **params;
    char **names;
    int32_t n;
} nn_param_list;
ag_status nn_param_list_get(nn_module *m, nn_param_list *out);
void nn_param_list_deinit(nn_param_list *l);
int64_t nn_param_count(nn_module *m); /* number of scalar parameters */
void nn_zero_grad(nn_module *m);

/* ---- tracing (used by qat/convert) ----------------------------------------------- */

/* While set, nn_forward reports every module call (after hooks): the module, its
 * inputs and its output. One callback per thread; NULL to stop. Modules with their own
 * call pattern (FloatFunctional) report through nn_trace_report. */
typedef void (*nn_trace_fn)(void *ud, nn_module *m, ag_tensor *const *in, int32_t n_in,
                            ag_tensor *out);
void nn_trace_set(nn_trace_fn fn, void *ud);
void nn_trace_report(nn_module *m, ag_tensor *const *in, int32_t n_in, ag_tensor *out);

#endif
