/* atomic_file.h — the file-system half of cqat's atomic saves, shared by nn/ (checkpoints,
 * state_dicts) and quantized/ (int8 models).
 *
 * A save writes "<path>.tmp-<pid>", fsyncs it, renames it over <path> and fsyncs the
 * directory, so a reader sees the old file or the new one, never a part. Header-only
 * and libc/POSIX-only on purpose: quantized/ must build and embed without any other
 * room, and each includer gets its own copy of these few functions. */
#ifndef CQAT_COMMON_ATOMIC_FILE_H
#define CQAT_COMMON_ATOMIC_FILE_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define CQ_ATOMIC_PATH_MAX 4096

/* "<path>.tmp-<pid>" into tmp (n >= strlen(path) + 32). */
static inline void cq_atomic_tmp_path(char *tmp, size_t n, const char *path)
{
    snprintf(tmp, n, "%s.tmp-%ld", path, (long)getpid());
}

/* The directory part of path ("." when there is none, "/" for the root). */
static inline void cq_atomic_dir_of(char *dir, size_t n, const char *path)
{
    snprintf(dir, n, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    else
        snprintf(dir, n, ".");
}

/* A writer killed mid-save (SIGKILL, power loss) leaves its "<path>.tmp-<pid>" behind;
 * the next save to the same path removes those of processes that no longer exist, so an
 * often-interrupted run does not fill the disk with them. A live process's file (a
 * concurrent writer, or a reused pid) is left alone. */
static inline void cq_atomic_remove_stale(const char *path)
{
    char dir[CQ_ATOMIC_PATH_MAX];
    cq_atomic_dir_of(dir, sizeof dir, path);
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    size_t blen = strlen(base);
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *name = e->d_name;
        if (strncmp(name, base, blen) != 0 || strncmp(name + blen, ".tmp-", 5) != 0)
            continue;
        char *end = NULL;
        long pid = strtol(name + blen + 5, &end, 10);
        if (!end || *end || pid <= 0 || pid == (long)getpid())
            continue;
        if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) {
            char stale[CQ_ATOMIC_PATH_MAX + 300];
            snprintf(stale, sizeof stale, "%s/%s", dir, name);
            unlink(stale);
        }
    }
    closedir(d);
}

/* fsync a written file by name; 0 or the errno of the failure (the caller words it). */
static inline int cq_atomic_fsync(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return errno ? errno : EIO;
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    return rc == 0 ? 0 : (err ? err : EIO);
}

/* The rename's directory entry must reach the disk too (best effort: some file
 * systems refuse to fsync a directory, and the data itself is already safe). */
static inline void cq_atomic_fsync_dir_of(const char *path)
{
    char dir[CQ_ATOMIC_PATH_MAX];
    cq_atomic_dir_of(dir, sizeof dir, path);
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

#endif
