/*
 * walbuf.c — a SQLite VFS shim that writes a transaction's WAL frames with
 * a few pwrite()s of up to 128 KiB instead of two per page (a 24-byte frame
 * header, then the page): ~140 system calls per commit of the ingest worker
 * became ~5.
 *
 * Writes to a WAL file that continue the previous one are gathered in a
 * buffer (allocated at the first write: readers never have one). The buffer
 * is written out before anything that could need its bytes — a read, a sync,
 * a truncate, the file's size, any file control, closing — and when it is
 * full. SQLite makes new frames visible to other connections (in the shared
 * wal-index) only after it has synced the WAL, which is when synchronous=FULL;
 * so this VFS is only used with FULL (sqlite.c), and then no reader can reach
 * a frame still in the buffer. Every other file (the database, journals)
 * is opened by the default VFS itself, untouched.
 *
 * Threads: as SQLite's own files (a connection is used by one thread at a time).
 */
#include "store/walbuf.h"
#include "core/common.h"

#include <stdlib.h>
#include <string.h>

/* The unix VFS writes at most 128 KiB - 1 bytes per call (it masks the length
 * with 0x1ffff: a longer write comes back short, as SQLITE_FULL). */
#define BUF_CAP ((size_t)0x1ffff)

typedef struct {
    sqlite3_file base; /* pMethods = &wal_methods */
    sqlite3_file *real; /* the default VFS's file, right after this struct */
    unsigned char *buf;
    size_t len;
    sqlite3_int64 off; /* file offset of buf[0] */
} wal_file_t;

static sqlite3_vfs shim, *real_vfs;

static int flush(wal_file_t *f)
{
    if (!f->len)
        return SQLITE_OK;
    int rc = f->real->pMethods->xWrite(f->real, f->buf, (int)f->len, f->off);
    f->len = 0;
    return rc;
}

static int w_close(sqlite3_file *file)
{
    wal_file_t *f = (wal_file_t *)file;
    int rc = flush(f), rc2 = f->real->pMethods->xClose(f->real);
    free(f->buf);
    f->buf = NULL;
    return rc != SQLITE_OK ? rc : rc2;
}

static int w_read(sqlite3_file *file, void *out, int amt, sqlite3_int64 off)
{
    wal_file_t *f = (wal_file_t *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xRead(f->real, out, amt, off);
}

static int w_write(sqlite3_file *file, const void *data, int amt, sqlite3_int64 off)
{
    wal_file_t *f = (wal_file_t *)file;
    if (f->len && (off != f->off + (sqlite3_int64)f->len || f->len + (size_t)amt > BUF_CAP)) {
        int rc = flush(f);
        if (rc != SQLITE_OK)
            return rc;
    }
    if ((size_t)amt >= BUF_CAP)
        return f->real->pMethods->xWrite(f->real, data, amt, off);
    if (!f->buf)
        f->buf = cti_malloc(BUF_CAP);
    if (!f->len)
        f->off = off;
    memcpy(f->buf + f->len, data, (size_t)amt);
    f->len += (size_t)amt;
    return SQLITE_OK;
}

/* The methods that need the bytes on disk first. */
static int w_truncate(sqlite3_file *file, sqlite3_int64 size)
{
    wal_file_t *f = (wal_file_t *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xTruncate(f->real, size);
}

static int w_sync(sqlite3_file *file, int flags)
{
    wal_file_t *f = (wal_file_t *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xSync(f->real, flags);
}

static int w_size(sqlite3_file *file, sqlite3_int64 *size)
{
    wal_file_t *f = (wal_file_t *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xFileSize(f->real, size);
}

static int w_fcntl(sqlite3_file *file, int op, void *arg)
{
    wal_file_t *f = (wal_file_t *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xFileControl(f->real, op, arg);
}

/* The rest only pass through. */
static int w_lock(sqlite3_file *file, int lock)
{
    wal_file_t *f = (wal_file_t *)file;
    return f->real->pMethods->xLock(f->real, lock);
}

static int w_unlock(sqlite3_file *file, int lock)
{
    wal_file_t *f = (wal_file_t *)file;
    return f->real->pMethods->xUnlock(f->real, lock);
}

static int w_reserved(sqlite3_file *file, int *out)
{
    wal_file_t *f = (wal_file_t *)file;
    return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int w_sector(sqlite3_file *file)
{
    wal_file_t *f = (wal_file_t *)file;
    return f->real->pMethods->xSectorSize(f->real);
}

static int w_device(sqlite3_file *file)
{
    wal_file_t *f = (wal_file_t *)file;
    return f->real->pMethods->xDeviceCharacteristics(f->real);
}

/* Version 1: a WAL file is never memory-mapped nor given shared memory. */
static const sqlite3_io_methods wal_methods = {
    .iVersion = 1,
    .xClose = w_close,
    .xRead = w_read,
    .xWrite = w_write,
    .xTruncate = w_truncate,
    .xSync = w_sync,
    .xFileSize = w_size,
    .xLock = w_lock,
    .xUnlock = w_unlock,
    .xCheckReservedLock = w_reserved,
    .xFileControl = w_fcntl,
    .xSectorSize = w_sector,
    .xDeviceCharacteristics = w_device,
};

static int s_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *out)
{
    (void)vfs;
    if (!(flags & SQLITE_OPEN_WAL)) /* the default VFS's file, in our (larger) space */
        return real_vfs->xOpen(real_vfs, name, file, flags, out);
    wal_file_t *f = (wal_file_t *)file;
    memset(f, 0, sizeof *f);
    f->real = (sqlite3_file *)(f + 1);
    int rc = real_vfs->xOpen(real_vfs, name, f->real, flags, out);
    f->base.pMethods = rc == SQLITE_OK ? &wal_methods : NULL;
    return rc;
}

static void register_once(void)
{
    real_vfs = sqlite3_vfs_find(NULL);
    if (!real_vfs)
        return;
    shim = *real_vfs; /* its other methods need nothing of their vfs argument but mxPathname */
    shim.szOsFile = (int)sizeof(wal_file_t) + real_vfs->szOsFile;
    shim.zName = CTI_WALBUF_VFS;
    shim.pNext = NULL;
    shim.xOpen = s_open;
    if (sqlite3_vfs_register(&shim, 0) != SQLITE_OK)
        real_vfs = NULL;
}

const char *cti_walbuf_vfs(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_once);
    return real_vfs ? CTI_WALBUF_VFS : NULL;
}
