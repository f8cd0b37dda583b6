/* Allreduce latency and bandwidth on the ranks it is started with, for docs/SCALING.md:
 *   mpirun -n 2 build/cnnb-bench-allreduce
 * Prints, for float sums from 4 B to 64 MiB, the median time of MPI_Allreduce and the
 * algorithm bandwidth (bytes / time) and bus bandwidth (x 2(p-1)/p, what a ring moves). */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

static int cmp(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  int rank, p;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &p);
  const size_t maxn = (size_t)16 << 20; /* 64 MiB of floats */
  float *buf = malloc(maxn * sizeof *buf);
  for (size_t i = 0; i < maxn; i++) buf[i] = 1.0f;
  if (rank == 0) printf("# %d ranks\n# bytes  median_us  algbw_GBps  busbw_GBps\n", p);
  for (size_t n = 1; n <= maxn; n *= 4) {
    int reps = n < 65536 ? 200 : n < (1 << 22) ? 20 : 5;
    double t[200];
    for (int r = -2; r < reps; r++) {
      MPI_Barrier(MPI_COMM_WORLD);
      double t0 = MPI_Wtime();
      MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      double dt = MPI_Wtime() - t0;
      MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      if (r >= 0) t[r] = dt;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp);
    double med = t[reps / 2], bytes = (double)n * sizeof(float);
    if (rank == 0)
      printf("%10.0f %10.1f %11.3f %11.3f\n", bytes, med * 1e6, bytes / med / 1e9, bytes / med / 1e9 * 2.0 * (p - 1) / p);
  }
  free(buf);
  MPI_Finalize();
  return 0;
}
