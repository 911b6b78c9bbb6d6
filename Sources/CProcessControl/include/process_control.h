#ifndef CRM_PROCESS_CONTROL_H
#define CRM_PROCESS_CONTROL_H

/* Thin wrappers over Linux process controls that Swift cannot call directly (prctl is
   variadic; gettid is hidden behind _GNU_SOURCE). Each returns 0 on success, -1 with errno. */

/* Core dumps off for good: RLIMIT_CORE soft and hard limits to 0. */
int crm_disable_core_dumps(void);
/* The soft RLIMIT_CORE now, or -1. */
long long crm_core_limit(void);
/* prctl(PR_SET_DUMPABLE, 0): no core dump, no ptrace attach by the same user. */
int crm_set_not_dumpable(void);
/* prctl(PR_GET_DUMPABLE): 0 or 1, or -1. */
int crm_dumpable(void);
/* Exits the process (status 70) as soon as its parent is no longer `expected_parent`: a thread
   checks four times a second. For test harnesses that must never leak processes. */
int crm_exit_with_parent(int expected_parent);
/* The calling thread's kernel id. */
int crm_thread_id(void);

#endif
