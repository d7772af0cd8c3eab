/* Runs pjreddie darknet's [yolo] layer (libdarknet, CPU build) on given raw
 * outputs and truths, and writes its activated output and delta.
 *
 * Usage: yolo_harness CFG NET_W NET_H IN TRUTH OUT
 *   CFG    a network of one [yolo] layer on the network input: [net] with
 *          batch, width = height = the grid, channels = len(mask)*(5+classes);
 *          [yolo] with mask, the full anchors list, num, classes,
 *          ignore_thresh, truth_thresh (parsed by darknet's own parse_yolo).
 *   NET_W, NET_H  the image size in pixels: the [yolo] layer divides its
 *          anchors by net.w / net.h, so they are set after parsing (the
 *          parsed net has the grid as its size).
 *   IN     float32 input[batch * n * (5 + classes) * h * w], darknet layout:
 *          image, anchor, entry (x y w h o c0 ..), row, column.
 *   TRUTH  float32 truth[batch * 90 * 5]: (x, y, w, h, class) relative to
 *          the image; a row with x == 0 ends an image's list.
 *   OUT    float32 output[same size as IN] (x, y, o, classes after the
 *          logistic), then delta[same size].
 *
 * forward_network runs the layer with net.train = 1; backward_yolo_layer
 * only adds l.delta to the previous layer's delta, so l.delta is what darknet
 * backpropagates as -dL/d(raw input).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "darknet.h"

static void read_exact(const char *path, float *buffer, size_t count)
{
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    if (fread(buffer, sizeof(float), count, f) != count) {
        fprintf(stderr, "yolo_harness: %s is shorter than %zu floats\n",
                path, count);
        exit(2);
    }
    fclose(f);
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: %s CFG NET_W NET_H IN TRUTH OUT\n", argv[0]);
        return 2;
    }
    network *net = parse_network_cfg(argv[1]);
    if (net->n != 1 || net->layers[0].type != YOLO) {
        fprintf(stderr, "yolo_harness: the cfg must hold one [yolo] layer\n");
        return 2;
    }
    layer l = net->layers[0];
    net->w = atoi(argv[2]);
    net->h = atoi(argv[3]);
    size_t outputs = (size_t)l.batch * l.outputs;
    size_t truths = (size_t)net->batch * net->truths;
    if (net->truths != l.max_boxes * 5) {
        fprintf(stderr, "yolo_harness: net.truths %d != 5 * max %d\n",
                net->truths, l.max_boxes);
        return 2;
    }
    read_exact(argv[4], net->input, outputs);
    read_exact(argv[5], net->truth, truths);
    net->train = 1;
    forward_network(net);

    FILE *out = fopen(argv[6], "wb");
    if (!out) { perror(argv[6]); return 2; }
    fwrite(l.output, sizeof(float), outputs, out);
    fwrite(l.delta, sizeof(float), outputs, out);
    fclose(out);
    free_network(net);
    return 0;
}
