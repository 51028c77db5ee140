// A small C face over MPI for the data-parallel trainer. MPI's handles (MPI_COMM_WORLD, MPI_Request, datatypes)
// are macros or implementation-specific types that Swift cannot import, so the few calls the trainer makes are
// wrapped here. When mpi.h is absent at build time (pkg-config finds no `ompi-c`), the same functions exist and
// report that MPI is unavailable, so the package builds and runs as one process everywhere.
#ifndef LLAMA_ADAPTER_CMPI_SHIM_H
#define LLAMA_ADAPTER_CMPI_SHIM_H

#include <stdint.h>
#include <string.h>
#include <time.h>
#include <sched.h>

/// Element types of a reduction.
enum { LA_MPI_FLOAT = 0, LA_MPI_DOUBLE = 1, LA_MPI_INT64 = 2 };
/// Reduction operations.
enum { LA_MPI_SUM = 0, LA_MPI_MAX = 1 };
/// Result of la_mpi_allreduce besides MPI error codes (which are positive).
enum { LA_MPI_OK = 0, LA_MPI_TIMEOUT = -1, LA_MPI_UNAVAILABLE = -2, LA_MPI_TOO_MANY = -3 };

#if __has_include(<mpi.h>)
#include <mpi.h>

/// 1 when this build links an MPI library.
static inline int la_mpi_available(void) { return 1; }

/// MPI_Init_thread (funneled: only the main thread calls MPI); errors return to the caller instead of aborting.
static inline int la_mpi_init(void) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
        int provided = 0;
        int e = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
        if (e != MPI_SUCCESS) return e;
    }
    return MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
}

/// MPI_Finalize once, if MPI was initialised.
static inline void la_mpi_finalize(void) {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (initialized && !finalized) MPI_Finalize();
}

/// This process's rank in MPI_COMM_WORLD.
static inline int la_mpi_rank(void) { int r = 0; MPI_Comm_rank(MPI_COMM_WORLD, &r); return r; }

/// Number of ranks in MPI_COMM_WORLD.
static inline int la_mpi_size(void) { int s = 1; MPI_Comm_size(MPI_COMM_WORLD, &s); return s; }

/// Number of ranks sharing this host (MPI_COMM_TYPE_SHARED), to split the cores between them.
static inline int la_mpi_local_size(void) {
    MPI_Comm local;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local) != MPI_SUCCESS) return 1;
    int s = 1;
    MPI_Comm_size(local, &s);
    MPI_Comm_free(&local);
    return s;
}

/// Stops every rank of the job.
static inline void la_mpi_abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

/// The text of an MPI error code.
static inline void la_mpi_error_string(int code, char *out, int capacity) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (capacity <= 0) return;
    if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) len = 0;
    if (len >= capacity) len = capacity - 1;
    memcpy(out, text, (size_t)len);
    out[len] = 0;
}

/// In-place allreduce of `count` elements, split into buckets of at most `bucket` elements that are all in
/// flight at once (MPI_Iallreduce), waited for by polling with short sleeps so a rank waiting for a slower one
/// leaves its core to it, and given up after `timeout` seconds (0: wait for ever). Returns LA_MPI_OK,
/// LA_MPI_TIMEOUT or an MPI error code.
static inline int la_mpi_allreduce(void *buffer, int64_t count, int kind, int op, int64_t bucket, double timeout) {
    enum { MAX_BUCKETS = 4096 };
    MPI_Datatype type = kind == LA_MPI_FLOAT ? MPI_FLOAT : kind == LA_MPI_DOUBLE ? MPI_DOUBLE : MPI_INT64_T;
    size_t size = kind == LA_MPI_FLOAT ? 4 : 8;
    MPI_Op mop = op == LA_MPI_MAX ? MPI_MAX : MPI_SUM;
    if (count <= 0) return LA_MPI_OK;
    if (bucket <= 0 || bucket > 0x40000000) bucket = 0x40000000;
    int64_t n = (count + bucket - 1) / bucket;
    if (n > MAX_BUCKETS) return LA_MPI_TOO_MANY;
    static MPI_Request requests[MAX_BUCKETS];
    for (int64_t i = 0; i < n; i++) {
        int64_t from = i * bucket;
        int64_t len = count - from < bucket ? count - from : bucket;
        int e = MPI_Iallreduce(MPI_IN_PLACE, (char *)buffer + from * (int64_t)size, (int)len, type, mop, MPI_COMM_WORLD, &requests[i]);
        if (e != MPI_SUCCESS) return e;
    }
    double start = MPI_Wtime();
    long spins = 0;
    for (;;) {
        int done = 0;
        int e = MPI_Testall((int)n, requests, &done, MPI_STATUSES_IGNORE);
        if (e != MPI_SUCCESS) return e;
        if (done) return LA_MPI_OK;
        if (timeout > 0 && MPI_Wtime() - start > timeout) return LA_MPI_TIMEOUT;
        // A few hundred quick polls first (the other rank is usually about to arrive), then 50 µs naps.
        if (++spins < 200) { sched_yield(); continue; }
        struct timespec ts = {0, 50000};
        nanosleep(&ts, NULL);
    }
}

/// Seconds on MPI's clock.
static inline double la_mpi_wtime(void) { return MPI_Wtime(); }

#else

static inline int la_mpi_available(void) { return 0; }
static inline int la_mpi_init(void) { return LA_MPI_UNAVAILABLE; }
static inline void la_mpi_finalize(void) {}
static inline int la_mpi_rank(void) { return 0; }
static inline int la_mpi_size(void) { return 1; }
static inline int la_mpi_local_size(void) { return 1; }
static inline void la_mpi_abort(int code) { (void)code; }
static inline void la_mpi_error_string(int code, char *out, int capacity) {
    (void)code;
    if (capacity > 0) { strncpy(out, "MPI is not available in this build", (size_t)capacity - 1); out[capacity - 1] = 0; }
}
static inline int la_mpi_allreduce(void *buffer, int64_t count, int kind, int op, int64_t bucket, double timeout) {
    (void)buffer; (void)count; (void)kind; (void)op; (void)bucket; (void)timeout;
    return LA_MPI_UNAVAILABLE;
}
static inline double la_mpi_wtime(void) { return 0; }

#endif
#endif
