/* Runs pjreddie darknet's [detection] layer (YOLOv1 objective) forward in
 * training mode on given raw outputs and truths, and writes its delta.
 *
 *   detection_harness NET.cfg INPUT.f32 TRUTH.f32 DELTA.f32
 *
 * NET.cfg: a [net] section (batch, inputs) and one [detection] section.
 * INPUT.f32: batch * inputs float32, darknet's flat layout per image
 *   [S*S*classes class scores][S*S*n confidences][S*S*n*4 coords].
 * TRUTH.f32: batch * S*S*(1 + classes + 4) float32, per cell (row-major)
 *   [is_obj, one-hot classes, x, y, w, h].
 * DELTA.f32 (written): batch * inputs float32 delta of the layer, then
 *   one float32: the layer's cost.
 * Darknet prints its own statistics to stdout; results go to the file only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <darknet.h>

static void read_exact(const char *path, float *dst, size_t count)
{
    FILE *f = fopen(path, "rb");
    if (!f || fread(dst, sizeof(float), count, f) != count) {
        fprintf(stderr, "cannot read %zu floats from %s\n", count, path);
        exit(2);
    }
    fclose(f);
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s NET.cfg INPUT.f32 TRUTH.f32 DELTA.f32\n", argv[0]);
        return 2;
    }
    network *net = parse_network_cfg(argv[1]);
    layer l = net->layers[net->n - 1];
    if (l.type != DETECTION) {
        fprintf(stderr, "last layer is not [detection]\n");
        return 2;
    }
    size_t inputs = (size_t)net->inputs * net->batch;
    size_t truths = (size_t)net->truths * net->batch;
    read_exact(argv[2], net->input, inputs);
    read_exact(argv[3], net->truth, truths);
    net->train = 1;
    forward_network(net);

    FILE *out = fopen(argv[4], "wb");
    if (!out) { fprintf(stderr, "cannot write %s\n", argv[4]); return 2; }
    fwrite(l.delta, sizeof(float), (size_t)l.outputs * l.batch, out);
    fwrite(l.cost, sizeof(float), 1, out);
    fclose(out);
    free_network(net);
    return 0;
}
