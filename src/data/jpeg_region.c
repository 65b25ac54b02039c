/*
 * A thin shim over libjpeg(-turbo) for wick's loader (src/data/jpeg.rs).
 *
 * Why C: libjpeg reports errors by calling a function that must not return; the only portable
 * way out is longjmp, which must not cross Rust frames. Everything that can longjmp lives in
 * this file, and each entry point returns a status code instead.
 *
 * Why a region decoder: RandomResizedCrop keeps 8-100% of the image. libjpeg-turbo can skip
 * whole rows (jpeg_skip_scanlines) and decode only a band of iMCU columns
 * (jpeg_crop_scanline), so the pixels that the crop throws away are never decoded.
 *
 * Status codes: 0 ok, 1 the file is not something this shim decodes exactly like the image
 * crate would (CMYK/YCCK, or libjpeg emitted a warning about corrupt data): the caller falls
 * back to the image crate, which decides; 2 error, with the message in `msg`.
 */
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>

#define WICK_OK 0
#define WICK_FALLBACK 1
#define WICK_ERROR 2

/* Columns of real neighbours kept on each side of a cropped band: the fancy (triangle) chroma
 * upsampler reads one chroma sample beyond each output pixel, so the band's outermost two luma
 * columns would otherwise be computed from replicated edges instead of the real neighbours. */
#define CONTEXT 2

struct wick_error {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    int warned;
    char *msg;
    size_t msg_len;
};

static void copy_message(j_common_ptr cinfo) {
    struct wick_error *err = (struct wick_error *)cinfo->err;
    char text[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, text);
    if (err->msg && err->msg_len > 0) {
        strncpy(err->msg, text, err->msg_len - 1);
        err->msg[err->msg_len - 1] = '\0';
    }
}

static void on_error_exit(j_common_ptr cinfo) {
    struct wick_error *err = (struct wick_error *)cinfo->err;
    copy_message(cinfo);
    longjmp(err->jump, 1);
}

/* Warnings (level -1) mean corrupt data that libjpeg papered over: stop and let the caller
 * decide with the other decoder. Trace messages (level >= 0) are ignored. */
static void on_emit_message(j_common_ptr cinfo, int level) {
    struct wick_error *err = (struct wick_error *)cinfo->err;
    if (level < 0) {
        err->warned = 1;
        copy_message(cinfo);
        longjmp(err->jump, 1);
    }
}

static void on_output_message(j_common_ptr cinfo) { (void)cinfo; }

static int finish(struct jpeg_decompress_struct *cinfo, struct wick_error *err) {
    int status = err->warned ? WICK_FALLBACK : WICK_ERROR;
    jpeg_destroy_decompress(cinfo);
    return status;
}

static void init(struct jpeg_decompress_struct *cinfo, struct wick_error *err, char *msg,
                 size_t msg_len) {
    memset(err, 0, sizeof(*err));
    cinfo->err = jpeg_std_error(&err->pub);
    err->pub.error_exit = on_error_exit;
    err->pub.emit_message = on_emit_message;
    err->pub.output_message = on_output_message;
    err->msg = msg;
    err->msg_len = msg_len;
    if (msg && msg_len > 0) msg[0] = '\0';
}

/* Width, height and component count from the headers. */
int wick_jpeg_header(const unsigned char *buf, unsigned long len, int *width, int *height,
                     int *components, char *msg, size_t msg_len) {
    struct jpeg_decompress_struct cinfo;
    struct wick_error err;
    init(&cinfo, &err, msg, msg_len);
    if (setjmp(err.jump)) return finish(&cinfo, &err);
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, buf, len);
    jpeg_read_header(&cinfo, TRUE);
    *width = (int)cinfo.image_width;
    *height = (int)cinfo.image_height;
    *components = cinfo.num_components;
    jpeg_destroy_decompress(&cinfo);
    return WICK_OK;
}

/*
 * Decodes rows [y, y + h) and at least columns [x, x + w) of the image as RGB (channels 3) or
 * its luma plane (channels 1, greyscale JPEGs only: colour ones go through RGB so that the grey
 * conversion matches PIL's), into `out`, which has room for `h * *out_width * channels` bytes
 * with `out_width` at most the image width.
 *
 * The decoded band starts at `*out_x <= x` and is `*out_width >= w` wide (libjpeg widens it to
 * iMCU boundaries; we widen it by CONTEXT more columns where the image has them). Rows are
 * `*out_width * channels` bytes apart.
 */
int wick_jpeg_decode_region(const unsigned char *buf, unsigned long len, int channels, int x,
                            int y, int w, int h, unsigned char *out, size_t out_cap, int *out_x,
                            int *out_width, char *msg, size_t msg_len) {
    struct jpeg_decompress_struct cinfo;
    struct wick_error err;
    init(&cinfo, &err, msg, msg_len);
    if (setjmp(err.jump)) return finish(&cinfo, &err);
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, buf, len);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&cinfo);
        return WICK_FALLBACK;
    }
    int iw = (int)cinfo.image_width, ih = (int)cinfo.image_height;
    if (channels == 1 && cinfo.num_components != 1) {
        jpeg_destroy_decompress(&cinfo);
        return WICK_FALLBACK;
    }
    if (x < 0 || y < 0 || w <= 0 || h <= 0 || x + w > iw || y + h > ih ||
        (channels != 1 && channels != 3)) {
        if (msg && msg_len > 0) snprintf(msg, msg_len, "region %dx%d at (%d, %d) outside the %dx%d image", w, h, x, y, iw, ih);
        jpeg_destroy_decompress(&cinfo);
        return WICK_ERROR;
    }
    cinfo.out_color_space = channels == 3 ? JCS_RGB : JCS_GRAYSCALE;
    /* PIL's settings (islow IDCT and fancy upsampling are libjpeg's defaults too). */
    cinfo.dct_method = JDCT_ISLOW;
    cinfo.do_fancy_upsampling = TRUE;
    jpeg_start_decompress(&cinfo);

    JDIMENSION band_x = (JDIMENSION)(x >= CONTEXT ? x - CONTEXT : 0);
    int right = x + w + CONTEXT < iw ? x + w + CONTEXT : iw;
    JDIMENSION band_w = (JDIMENSION)right - band_x;
    if (band_x > 0 || band_w < cinfo.output_width) jpeg_crop_scanline(&cinfo, &band_x, &band_w);
    size_t stride = (size_t)band_w * (size_t)channels;
    if (stride * (size_t)h > out_cap) {
        if (msg && msg_len > 0) snprintf(msg, msg_len, "band of %u columns does not fit the buffer", band_w);
        jpeg_destroy_decompress(&cinfo);
        return WICK_ERROR;
    }
    /* Rows above the region: skipped. libjpeg-turbo still decodes what the upsampler needs as
     * context, so row y comes out exactly as in a full decode. */
    if (y > 0) jpeg_skip_scanlines(&cinfo, (JDIMENSION)y);
    while (cinfo.output_scanline < (JDIMENSION)(y + h)) {
        JSAMPROW row = out + stride * (size_t)(cinfo.output_scanline - (JDIMENSION)y);
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    *out_x = (int)band_x;
    *out_width = (int)band_w;
    /* Rows below the region are never decoded: abort instead of finishing. */
    jpeg_abort_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return WICK_OK;
}
