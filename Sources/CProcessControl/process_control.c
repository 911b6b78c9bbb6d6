#define _GNU_SOURCE
#include "process_control.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

int crm_disable_core_dumps(void) {
    struct rlimit none = {0, 0};
    return setrlimit(RLIMIT_CORE, &none);
}

long long crm_core_limit(void) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_CORE, &limit) != 0) return -1;
    return (long long)limit.rlim_cur;
}

int crm_set_not_dumpable(void) { return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); }

int crm_dumpable(void) { return prctl(PR_GET_DUMPABLE, 0, 0, 0, 0); }

/* PR_SET_PDEATHSIG fires when the parent *thread* that forked ends, which in a threaded test
   runner happens while the parent lives on; polling the parent id does not have that flaw. */
static void *crm_watch_parent(void *argument) {
    pid_t expected = (pid_t)(long)argument;
    for (;;) {
        if (getppid() != expected) _exit(70);
        usleep(250 * 1000);
    }
    return NULL;
}

int crm_exit_with_parent(int expected_parent) {
    if (getppid() != expected_parent) _exit(70);
    pthread_t thread;
    if (pthread_create(&thread, NULL, crm_watch_parent, (void *)(long)expected_parent) != 0) return -1;
    return pthread_detach(thread);
}

int crm_thread_id(void) { return (int)gettid(); }
