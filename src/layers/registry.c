/* The one list of layer kinds: section name -> ops table. Adding a kind touches its own file
 * and one line here. */
#include <string.h>

#include "cnnb/layer.h"

#define CNNB_LAYER_KINDS(X)                                                                       \
  X(convolutional) X(connected) X(batchnorm) X(softmax) X(maxpool) X(avgpool) X(shortcut)         \
  X(route) X(upsample) X(dropout) X(crop) X(l2norm) X(yolo) X(region) X(triplet) X(siamese) X(zeropad)

#define DECLARE(kind) extern const cnnb_layer_ops cnnb_layer_##kind##_ops;
CNNB_LAYER_KINDS(DECLARE)
#undef DECLARE

#define ENTRY(kind) &cnnb_layer_##kind##_ops,
static const cnnb_layer_ops *const kinds[] = {CNNB_LAYER_KINDS(ENTRY)};
#define NKINDS ((int)(sizeof kinds / sizeof *kinds))
#undef ENTRY

/* Darknet's short names for the same sections. */
static const struct {
  const char *alias, *name;
} aliases[] = {{"conv", "convolutional"}, {"conn", "connected"}, {"max", "maxpool"},
               {"avg", "avgpool"}, {"soft", "softmax"}, {"bn", "batchnorm"}, {"normalization", "batchnorm"}};

const cnnb_layer_ops *cnnb_layer_ops_find(const char *section)
{
  for (size_t i = 0; i < sizeof aliases / sizeof *aliases; i++)
    if (!strcmp(section, aliases[i].alias)) section = aliases[i].name;
  for (int i = 0; i < NKINDS; i++)
    if (kinds[i]->section && !strcmp(kinds[i]->section, section)) return kinds[i];
  return NULL;
}

const char *cnnb_layer_known_sections(void)
{
  static char buf[512];
  if (!buf[0]) {
    for (int i = 0; i < NKINDS; i++) {
      if (!kinds[i]->section) continue;
      if (buf[0]) strncat(buf, ", ", sizeof buf - strlen(buf) - 1);
      strncat(buf, kinds[i]->section, sizeof buf - strlen(buf) - 1);
    }
  }
  return buf;
}
