/* Runs pjreddie darknet (libdarknet, CPU build) on given images and dumps
 * layer outputs, for the weights-import parity tests.
 *
 * Usage: predict_harness randomize CFG SEED OUT_WEIGHTS
 *   builds the network of CFG, fills every weighted layer (convolutional,
 *   connected, local) with random values: weights uniform in +-sqrt(3/fan_in),
 *   biases and rolling means in +-0.5, scales and rolling variances in
 *   [0.5, 1.5], and writes them with save_weights: the file layout is darknet's.
 *
 * Usage: predict_harness predict CFG WEIGHTS IN OUT MODE
 *   CFG, WEIGHTS   darknet files, read by parse_network_cfg + load_weights
 *   IN   (little-endian binary): int32 n, c, h, w; float32 images[n][c][h][w]
 *   MODE "boxes": get_network_boxes(thresh 0, relative): per box x, y, w, h
 *                 (fractions of the image), objectness, prob[classes]
 *                 (= objectness * class probability), in darknet's order
 *        "heads": for each [detection] / [region] / [yolo] layer i, the
 *                 input of that layer (= output of layer i - 1), i.e. the raw
 *                 values before the head's in-place activations
 *        "all":   the output of every layer
 *   OUT  float32, for each image, the dumped tensors one after the other
 *   stdout: one line per dumped tensor: "index type c h w size" (type is
 *   darknet's LAYER_TYPE number, c h w the tensor's channels, rows, columns
 *   in darknet's (c, h, w) memory order, size = c * h * w).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "darknet.h"

static void read_exact(FILE *f, void *buffer, size_t size, size_t count)
{
    if (fread(buffer, size, count, f) != count) {
        fprintf(stderr, "predict_harness: short input\n");
        exit(2);
    }
}

static int is_head(LAYER_TYPE type)
{
    return type == DETECTION || type == REGION || type == YOLO;
}

static unsigned long long rng_state;

static float uniform(float low, float high)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    float unit = (float)((rng_state >> 40) & 0xFFFFFF) / (float)0x1000000;
    return low + (high - low) * unit;
}

static void fill(float *x, int count, float low, float high)
{
    for (int i = 0; i < count; ++i) x[i] = uniform(low, high);
}

static int randomize(char *cfg, char *seed, char *weights)
{
    network *net = parse_network_cfg(cfg);
    rng_state = strtoull(seed, 0, 10) + 1;
    for (int i = 0; i < net->n; ++i) {
        layer l = net->layers[i];
        int biases, weights_count, fan_in, outputs;
        if (l.type == CONVOLUTIONAL) {
            outputs = l.n;
            biases = l.n;
            fan_in = l.c / l.groups * l.size * l.size;
            weights_count = fan_in * l.n;
        } else if (l.type == CONNECTED) {
            outputs = l.outputs;
            biases = l.outputs;
            fan_in = l.inputs;
            weights_count = l.inputs * l.outputs;
        } else if (l.type == LOCAL) {
            outputs = 0; /* no batch norm */
            biases = l.outputs;
            fan_in = l.size * l.size * l.c;
            weights_count = fan_in * l.n * l.out_w * l.out_h;
        } else {
            continue;
        }
        float bound = sqrtf(3.0f / fan_in);
        fill(l.weights, weights_count, -bound, bound);
        fill(l.biases, biases, -0.5f, 0.5f);
        if (l.batch_normalize && outputs) {
            fill(l.scales, outputs, 0.5f, 1.5f);
            fill(l.rolling_mean, outputs, -0.5f, 0.5f);
            fill(l.rolling_variance, outputs, 0.5f, 1.5f);
        }
    }
    save_weights(net, weights);
    free_network(net);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "randomize") == 0) {
        return randomize(argv[2], argv[3], argv[4]);
    }
    if (argc != 7 || strcmp(argv[1], "predict") != 0) {
        fprintf(stderr, "usage: %s predict CFG WEIGHTS IN OUT heads|all|boxes\n"
                        "       %s randomize CFG SEED OUT_WEIGHTS\n", argv[0], argv[0]);
        return 2;
    }
    argv += 1;
    int all = strcmp(argv[5], "all") == 0;
    int boxes = strcmp(argv[5], "boxes") == 0;
    network *net = parse_network_cfg(argv[1]);
    load_weights(net, argv[2]);
    set_batch_network(net, 1);

    FILE *in = fopen(argv[3], "rb");
    if (!in) { perror(argv[3]); return 2; }
    int dims[4];
    read_exact(in, dims, sizeof(int), 4);
    int n = dims[0], size = dims[1] * dims[2] * dims[3];
    if (dims[1] != net->c || dims[2] != net->h || dims[3] != net->w) {
        fprintf(stderr, "predict_harness: images %dx%dx%d, network %dx%dx%d\n",
                dims[1], dims[2], dims[3], net->c, net->h, net->w);
        return 2;
    }
    float *image = malloc(sizeof(float) * size);
    FILE *out = fopen(argv[4], "wb");
    if (!out) { perror(argv[4]); return 2; }

    for (int b = 0; b < n; ++b) {
        read_exact(in, image, sizeof(float), size);
        network_predict(net, image);
        for (int i = 0; i < net->n; ++i) {
            layer l = net->layers[i];
            if (all) {
                fwrite(l.output, sizeof(float), l.outputs, out);
                if (b == 0) printf("%d %d %d %d %d %d\n", i, l.type, l.out_c, l.out_h,
                                   l.out_w, l.outputs);
            } else if (boxes) {
                continue;
            } else if (is_head(l.type) && i > 0) {
                layer prev = net->layers[i - 1];
                fwrite(prev.output, sizeof(float), l.inputs, out);
                if (b == 0) printf("%d %d %d %d %d %d\n", i, l.type, l.c, l.h, l.w,
                                   l.inputs);
            }
        }
        if (boxes) {
            /* thresh 0 keeps every box and every class probability;
             * relative=1 with the network's own size: no letterbox correction. */
            int count = 0;
            detection *dets = get_network_boxes(net, net->w, net->h, 0, 0, 0, 1, &count);
            /* make_network_boxes sizes prob[] by the last layer's classes. */
            int classes = net->layers[net->n - 1].classes;
            for (int d = 0; d < count; ++d) {
                float row[4] = {dets[d].bbox.x, dets[d].bbox.y, dets[d].bbox.w, dets[d].bbox.h};
                fwrite(row, sizeof(float), 4, out);
                fwrite(&dets[d].objectness, sizeof(float), 1, out);
                fwrite(dets[d].prob, sizeof(float), classes, out);
            }
            if (b == 0) printf("-1 -1 %d %d 1 %d\n", 5 + classes, count, count * (5 + classes));
            free_detections(dets, count);
        }
    }
    fclose(out);
    fclose(in);
    free(image);
    free_network(net);
    return 0;
}
