/* mAP (include/cnnb/detect.h cnnb_detect_map): VOC-style all-point interpolated average
 * precision per class, the mean over the classes that have truths. */
#include <math.h>
#include <stdlib.h>

#include "cnnb/detect.h"
#include "cnnb/error.h"

typedef struct ranked {
  float score;
  long row, img;
} ranked;

static int by_score(const void *pa, const void *pb)
{
  const ranked *a = pa, *b = pb;
  if (a->score != b->score) return a->score > b->score ? -1 : 1;
  return a->row < b->row ? -1 : a->row > b->row; /* ties: a fixed order */
}

int cnnb_detect_map(long nimg, const long long *doff, const long long *dcls, const float *dscore, const float *dbox,
                    const long long *toff, const float *truth, int nclasses, float iou_thresh, double *ap,
                    double *map)
{
  const long nd = (long)doff[nimg], nt = (long)toff[nimg];
  ranked *r = malloc(sizeof *r * (size_t)(nd ? nd : 1));
  char *used = calloc((size_t)(nt ? nt : 1), 1);
  double *prec = malloc(sizeof *prec * (size_t)(nd + 1)), *rec = malloc(sizeof *rec * (size_t)(nd + 1));
  if (!r || !used || !prec || !rec) {
    free(r), free(used), free(prec), free(rec);
    return cnnb_error(CNNB_ENOMEM, "mAP: out of memory for %ld detections", nd);
  }
  double sum = 0;
  int counted = 0;
  for (int k = 0; k < nclasses; k++) {
    long npos = 0, m = 0;
    for (long t = 0; t < nt; t++) npos += (int)truth[5 * t + 4] == k;
    for (long i = 0; i < nimg; i++)
      for (long long d = doff[i]; d < doff[i + 1]; d++)
        if (dcls[d] == k) r[m++] = (ranked){dscore[d], (long)d, i};
    if (!npos) {
      ap[k] = NAN;
      continue;
    }
    qsort(r, (size_t)m, sizeof *r, by_score);
    for (long t = 0; t < nt; t++) used[t] = 0;
    long tp = 0, fp = 0;
    for (long j = 0; j < m; j++) {
      const float *b = dbox + 4 * r[j].row;
      float best = -1;
      long bt = -1;
      for (long long t = toff[r[j].img]; t < toff[r[j].img + 1]; t++) {
        if ((int)truth[5 * t + 4] != k) continue;
        float iou = cnnb_box_iou((cnnb_box){b[0], b[1], b[2], b[3]},
                                 (cnnb_box){truth[5 * t], truth[5 * t + 1], truth[5 * t + 2], truth[5 * t + 3]});
        if (iou > best) best = iou, bt = (long)t;
      }
      if (bt >= 0 && best >= iou_thresh && !used[bt])
        used[bt] = 1, tp++;
      else
        fp++;
      prec[j] = (double)tp / (tp + fp);
      rec[j] = (double)tp / npos;
    }
    /* precision envelope from the right, then the area under the step curve */
    for (long j = m - 2; j >= 0; j--)
      if (prec[j + 1] > prec[j]) prec[j] = prec[j + 1];
    double a = 0, last = 0;
    for (long j = 0; j < m; j++) {
      a += (rec[j] - last) * prec[j];
      last = rec[j];
    }
    ap[k] = a;
    sum += a;
    counted++;
  }
  *map = counted ? sum / counted : NAN;
  free(r), free(used), free(prec), free(rec);
  return 0;
}
