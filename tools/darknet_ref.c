/* darknet_ref: Darknet's own detections, for comparing cnn-batch detect against Darknet
 * (tests/e2e/darknet_compat.sh). Built against Debian's libdarknet (/usr/lib/darknet/libdarknet.so,
 * header /usr/lib/darknet/include/darknet.h) and doing what `darknet detector test` does
 * (load_image_color, letterbox_image, network_predict, get_network_boxes with relative boxes,
 * do_nms_sort), but printing every kept box with its class, score and pixel coordinates,
 * which the darknet program does not.
 *
 *   darknet_ref CFG WEIGHTS THRESH NMS IMAGE...
 * prints per image "image INDEX PATH W H", then per box and class with prob > THRESH
 * "CLASS SCORE X Y W H" (centre and size in the original image's pixels). */
#include <stdio.h>
#include <stdlib.h>

#include "darknet.h"

int main(int argc, char **argv)
{
  if (argc < 6) {
    fprintf(stderr, "usage: darknet_ref CFG WEIGHTS THRESH NMS IMAGE...\n");
    return 2;
  }
  network *net = load_network(argv[1], argv[2], 0);
  if (!net) return 1;
  set_batch_network(net, 1);
  const float thresh = (float)atof(argv[3]), nms = (float)atof(argv[4]);
  for (int i = 5; i < argc; i++) {
    image im = load_image_color(argv[i], 0, 0);
    image sized = letterbox_image(im, net->w, net->h);
    network_predict(net, sized.data);
    int nboxes = 0;
    /* hier 0.5 and relative 1: test_detector's arguments */
    detection *dets = get_network_boxes(net, im.w, im.h, thresh, 0.5f, 0, 1, &nboxes);
    /* the last layer's classes, as test_detector: [region] leaves detection.classes unset */
    int classes = net->layers[net->n - 1].classes;
    if (nms > 0 && nboxes > 0) do_nms_sort(dets, nboxes, classes, nms);
    printf("image %d %s %d %d\n", i - 5, argv[i], im.w, im.h);
    for (int b = 0; b < nboxes; b++)
      for (int k = 0; k < classes; k++)
        if (dets[b].prob[k] > thresh)
          printf("%d %.6f %.4f %.4f %.4f %.4f\n", k, dets[b].prob[k], dets[b].bbox.x * im.w, dets[b].bbox.y * im.h,
                 dets[b].bbox.w * im.w, dets[b].bbox.h * im.h);
    free_detections(dets, nboxes);
    free_image(sized);
    free_image(im);
  }
  return 0;
}
