/*
 * walbuf.h — a SQLite VFS that writes each transaction's WAL frames in few
 * system calls (see walbuf.c). Only for connections with synchronous=FULL.
 */
#ifndef CTI_STORE_WALBUF_H
#define CTI_STORE_WALBUF_H

#include <pthread.h>

#include <sqlite3.h>

#define CTI_WALBUF_VFS "cti-walbuf"

/* Registers the VFS (once; any thread) and returns its name for
 * sqlite3_open_v2(), or NULL when SQLite has no default VFS to wrap. */
const char *cti_walbuf_vfs(void);

#endif
