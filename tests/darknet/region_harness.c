/* Runs pjreddie darknet's [region] layer (libdarknet, CPU build) on given
 * raw outputs and truths, and writes its activated output, delta and cost.
 *
 * Usage: region_harness IN OUT
 *   IN  (little-endian binary):
 *     int32   batch, w, h, n, classes, seen, rescore, bias_match
 *     float32 thresh, coord_scale, object_scale, noobject_scale, class_scale
 *     float32 biases[2 n]                  anchors (w, h) in grid cells
 *     float32 input[batch * n * (5 + classes) * h * w]   darknet layout:
 *             image, anchor, entry (x y w h o c0..), row, column
 *     float32 truth[batch * 30 * 5]        (x, y, w, h, class) relative to
 *             the image; a row with x == 0 ends an image's list
 *   OUT: float32 output[same size as input], delta[same], cost[1]
 *
 * The [region] layer is built with make_region_layer and configured as a
 * cfg's [region] section would (softmax=1, coords=4), then
 * forward_region_layer is called with net.train = 1 and *net.seen = seen.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "darknet.h"

/* Exported by libdarknet but not declared in darknet.h. */
layer make_region_layer(int batch, int w, int h, int n, int classes, int coords);
void forward_region_layer(const layer l, network net);

#define REGION_MAX_TRUTHS 30 /* hard-coded in region_layer.c */

static void read_exact(FILE *f, void *buffer, size_t size, size_t count)
{
    if (fread(buffer, size, count, f) != count) {
        fprintf(stderr, "region_harness: short input\n");
        exit(2);
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s IN OUT\n", argv[0]);
        return 2;
    }
    FILE *in = fopen(argv[1], "rb");
    if (!in) { perror(argv[1]); return 2; }
    int header[8];
    float params[5];
    read_exact(in, header, sizeof(int), 8);
    read_exact(in, params, sizeof(float), 5);
    int batch = header[0], w = header[1], h = header[2], n = header[3];
    int classes = header[4];

    layer l = make_region_layer(batch, w, h, n, classes, 4);
    l.softmax = 1;
    l.rescore = header[6];
    l.bias_match = header[7];
    l.thresh = params[0];
    l.coord_scale = params[1];
    l.object_scale = params[2];
    l.noobject_scale = params[3];
    l.class_scale = params[4];
    read_exact(in, l.biases, sizeof(float), 2 * n);

    size_t outputs = (size_t)batch * l.outputs;
    size_t truths = (size_t)batch * REGION_MAX_TRUTHS * 5;
    float *input = calloc(outputs, sizeof(float));
    float *truth = calloc(truths, sizeof(float));
    read_exact(in, input, sizeof(float), outputs);
    read_exact(in, truth, sizeof(float), truths);
    fclose(in);

    size_t seen = (size_t)header[5];
    network net;
    memset(&net, 0, sizeof(net));
    net.batch = batch;
    net.seen = &seen;
    net.input = input;
    net.truth = truth;
    net.truths = REGION_MAX_TRUTHS * 5;
    net.train = 1;

    forward_region_layer(l, net);

    FILE *out = fopen(argv[2], "wb");
    if (!out) { perror(argv[2]); return 2; }
    fwrite(l.output, sizeof(float), outputs, out);
    fwrite(l.delta, sizeof(float), outputs, out);
    fwrite(l.cost, sizeof(float), 1, out);
    fclose(out);
    free(input);
    free(truth);
    return 0;
}
