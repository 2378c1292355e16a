/* A disk whose fsync is slow, for `scripts/bench-slow-disk`: preloaded into the benchmark and
 * the processes it starts, it makes every fsync and fdatasync wait FSYNC_DELAY_US microseconds
 * (default 2000) before the real call. Network block devices and busy shared disks have such
 * fsyncs; this machine's local disk answers in ~0.2 ms. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static void wait_delay(void) {
    const char *setting = getenv("FSYNC_DELAY_US");
    long micros = setting ? atol(setting) : 2000;
    struct timespec delay = {micros / 1000000, (micros % 1000000) * 1000};
    nanosleep(&delay, NULL);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    wait_delay();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    wait_delay();
    return real(fd);
}
