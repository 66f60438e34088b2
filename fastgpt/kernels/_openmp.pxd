# OpenMP helpers that compile to no-ops when the build has no OpenMP (see setup.py).
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FG_OPENMP_ENABLED 1
    static int fg_thread_id(void) { return omp_get_thread_num(); }
    #else
    #define FG_OPENMP_ENABLED 0
    static int fg_thread_id(void) { return 0; }
    #endif
    """
    bint FG_OPENMP_ENABLED
    int fg_thread_id() nogil
