/*
 * fault.h - fault injection for tests (built only into the test library,
 * libarmdb_test.a, with ARMDB_FAULT_INJECTION defined; the shipped
 * libraries have none of it).
 *
 * Each kind of system call made by io.c is counted; a test arms a fault so
 * that the Nth call of a kind (counted from the arming) fails with a given
 * errno, once or from then on. Sweeping N over every call of a workload
 * proves each failure path.
 */
#ifndef ARMDB_FAULT_H
#define ARMDB_FAULT_H

#include <stdint.h>

enum fault_op {
    FAULT_WRITE,    /* pwrite, ftruncate */
    FAULT_DATASYNC, /* fdatasync: the barriers of data files */
    FAULT_OPEN,     /* openat */
    FAULT_RENAME, /* renameat */
    FAULT_READ,   /* pread */
    FAULT_FSYNC,  /* fsync: directories, hint and meta files */
    FAULT_NOPS
};

/* err for a write that kills the process instead (SIGKILL) once it has
 * written the first half of its bytes: a crash in the middle of it. */
#define ARMDB_FAULT_KILL 0x10000

/* Make the nth call of op from now fail with -err (sticky: every later one
 * too). nth == 0 disarms op. Counters restart at each arming. */
void armdb_fault_arm(int op, uint64_t nth, int err, int sticky);
/* Calls of op made since the last arming or reset. */
uint64_t armdb_fault_calls(int op);
/* Faults fired since the last reset, all ops. */
uint64_t armdb_fault_fired(void);
/* Disarm everything and zero the counters. */
void armdb_fault_reset(void);

#endif
