/* An LD_PRELOAD shim for the storage fault tests: while the file named by
 * $STRATA_FAULT_FSYNC_FILE exists, fsync() and fdatasync() fail with EIO, as they do when the
 * kernel could not write back dirty pages. Everything else passes through to libc. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static int fault_active(void) {
    const char *flag = getenv("STRATA_FAULT_FSYNC_FILE");
    return flag != NULL && access(flag, F_OK) == 0;
}

int fsync(int fd) {
    static int (*real_fsync)(int);
    if (fault_active()) {
        errno = EIO;
        return -1;
    }
    if (real_fsync == NULL) {
        real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    }
    return real_fsync(fd);
}

int fdatasync(int fd) {
    static int (*real_fdatasync)(int);
    if (fault_active()) {
        errno = EIO;
        return -1;
    }
    if (real_fdatasync == NULL) {
        real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    }
    return real_fdatasync(fd);
}
