/*
 * eio_shim.c — an LD_PRELOAD library for the `ioerror` drill (tests/drills/drills.py):
 * while the file named by EIO_SHIM_TRIGGER exists, write, pwrite, pwrite64, writev,
 * pwritev, fsync and fdatasync on files under the directory EIO_SHIM_DIR fail with EIO
 * (nothing written), as a failing disk answers; when the trigger file holds "sync", only
 * fsync and fdatasync fail (the writes succeed: the bytes sit in the page cache, as
 * when a disk fails at writeback). Every other file (the log on stdout, sockets) is
 * untouched. Each failure is counted in the trigger file's sibling
 * EIO_SHIM_TRIGGER.count (one byte appended per failed call) so the drill can tell the
 * shim was hit.
 *
 * Built by the drill: cc -shared -fPIC -O2 -o eio_shim.so eio_shim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);

__attribute__((constructor)) static void init(void)
{
    real_write = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    real_pwrite = (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite");
    real_pwrite64 = (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite64");
    real_writev = (ssize_t(*)(int, const struct iovec *, int))dlsym(RTLD_NEXT, "writev");
    real_pwritev = (ssize_t(*)(int, const struct iovec *, int, off_t))dlsym(RTLD_NEXT, "pwritev");
    real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
}

/* A call made before the constructor ran (another library's) resolves them first. */
#define REAL(name) ((real_##name ? (void)0 : init()), real_##name)

/* Does this call fail? Only while the trigger exists and only for files under the dir;
 * a write (sync == 0) not when the trigger holds "sync". */
static int failing(int fd, int sync)
{
    const char *trigger = getenv("EIO_SHIM_TRIGGER"), *dir = getenv("EIO_SHIM_DIR");
    if (!trigger || !dir || fd < 0)
        return 0;
    int saved = errno;
    int t = open(trigger, O_RDONLY | O_CLOEXEC);
    if (t < 0) {
        errno = saved;
        return 0;
    }
    char mode[8] = {0};
    ssize_t got = read(t, mode, sizeof mode - 1);
    close(t);
    if (!sync && got >= 4 && strncmp(mode, "sync", 4) == 0) {
        errno = saved;
        return 0;
    }
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    size_t dl = strlen(dir);
    int hit = n > 0 && (size_t)n > dl && strncmp(path, dir, dl) == 0 && path[dl] == '/';
    if (hit) {
        char count[PATH_MAX];
        snprintf(count, sizeof count, "%s.count", trigger);
        int c = open(count, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (c >= 0) {
            REAL(write)(c, "x", 1);
            close(c);
        }
    }
    errno = saved;
    return hit;
}

#define FAIL_IF(fd, sync)                                                                          \
    do {                                                                                           \
        if (failing(fd, sync)) {                                                                   \
            errno = EIO;                                                                           \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)

ssize_t write(int fd, const void *buf, size_t n)
{
    FAIL_IF(fd, 0);
    return REAL(write)(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    FAIL_IF(fd, 0);
    return REAL(pwrite)(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
    FAIL_IF(fd, 0);
    return REAL(pwrite64)(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    FAIL_IF(fd, 0);
    return REAL(writev)(fd, iov, cnt);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    FAIL_IF(fd, 0);
    return REAL(pwritev)(fd, iov, cnt, off);
}

int fsync(int fd)
{
    FAIL_IF(fd, 1);
    return REAL(fsync)(fd);
}

int fdatasync(int fd)
{
    FAIL_IF(fd, 1);
    return REAL(fdatasync)(fd);
}
