// libjpeg-turbo and libpng, plus two small decoders that keep their setjmp/longjmp error handling
// entirely in C. Both libraries report fatal errors by calling a handler that must not return; the
// only safe way out is longjmp, and longjmp across Swift frames is undefined. So each decode runs
// inside one C function that owns the setjmp and every libjpeg/libpng call, and Swift only sees a
// status code. The functions are `noinline` (and LLVM never inlines a function that calls setjmp),
// so the jump target always stays in this C frame.
//
// The transforms copy what OpenCV 4.6's cv2.imread(path, IMREAD_COLOR) does (grfmt_jpeg.cpp,
// grfmt_png.cpp), because the official LLaMA-Adapter code reads images with cv2: see AdapterVision.
#ifndef CIMAGECODECS_SHIM_H
#define CIMAGECODECS_SHIM_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

/// Result of a decode: 8-bit RGB pixels (row-major, interleaved) and the raw EXIF block, if any.
typedef struct ci_image {
    unsigned char *pixels;      ///< width*height*3 bytes from malloc, or NULL; release with ci_image_free.
    unsigned int width;         ///< Decoded width (also set when the image is refused as too large).
    unsigned int height;        ///< Decoded height (also set when the image is refused as too large).
    unsigned char *exif;        ///< TIFF-structured EXIF bytes from malloc, or NULL.
    size_t exif_size;           ///< Byte count of `exif`.
    char message[256];          ///< The library's error message when the status is CI_ERROR.
} ci_image;

enum {
    CI_OK = 0,
    CI_ERROR = 1,       ///< The codec reported a fatal error; see `message`.
    CI_TOO_LARGE = 2,   ///< width*height exceeds the caller's limit; nothing was decoded.
    CI_NO_MEMORY = 3
};

/// Frees the buffers of a ci_image (safe on a zeroed struct).
static inline void ci_image_free(ci_image *img) {
    free(img->pixels);
    free(img->exif);
    img->pixels = NULL;
    img->exif = NULL;
    img->exif_size = 0;
}

/* ------------------------------------------------------------------------------------------ JPEG */

/// A progressive JPEG can hold thousands of tiny scans that each cost a full pass over the
/// coefficients (a known CPU-exhaustion vector); real files have fewer than 20.
#define CI_JPEG_MAX_SCANS 1000

struct ci_jpeg_error {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    ci_image *out;
    int in_header;
    int eof_seen;
};

static void ci_jpeg_error_exit(j_common_ptr cinfo) {
    struct ci_jpeg_error *err = (struct ci_jpeg_error *)cinfo->err;
    char buffer[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, buffer);
    snprintf(err->out->message, sizeof err->out->message, "%s", buffer);
    longjmp(err->jump, 1);
}

/// Warnings are silenced (cv2 prints them and carries on, and so do we: "extraneous bytes before
/// marker" is common in camera files and harmless) except truncation. At the end of the input,
/// libjpeg's source managers warn (JWRN_JPEG_EOF) and insert a fake EOI marker; if the entropy
/// decoder then still needs bits it warns again (JWRN_HIT_MARKER) and decodes zeros, so cv2.imread
/// returns an image whose missing part is a grey/smeared band. We refuse exactly that pair, and an
/// end of input inside the headers. A file that only lacks its final EOI marker (no missing
/// entropy data) still decodes, to the same pixels as cv2.
static void ci_jpeg_emit_message(j_common_ptr cinfo, int msg_level) {
    struct ci_jpeg_error *err = (struct ci_jpeg_error *)cinfo->err;
    if (msg_level < 0) {
        int code = cinfo->err->msg_code;
        if (code == JWRN_JPEG_EOF) err->eof_seen = 1;
        if ((code == JWRN_JPEG_EOF && err->in_header) || (code == JWRN_HIT_MARKER && err->eof_seen)) {
            snprintf(err->out->message, sizeof err->out->message, "file is truncated");
            longjmp(err->jump, 1);
        }
        cinfo->err->num_warnings++;
    }
}

static void ci_jpeg_output_message(j_common_ptr cinfo) { (void)cinfo; }

static void ci_jpeg_progress(j_common_ptr cinfo) {
    if (cinfo->is_decompressor) {
        int scan = ((j_decompress_ptr)cinfo)->input_scan_number;
        if (scan > CI_JPEG_MAX_SCANS) {
            struct ci_jpeg_error *err = (struct ci_jpeg_error *)cinfo->err;
            snprintf(err->out->message, sizeof err->out->message,
                     "JPEG has more than %d scans", CI_JPEG_MAX_SCANS);
            longjmp(err->jump, 1);
        }
    }
}

/// Decodes a JPEG to RGB the way cv2.imread(IMREAD_COLOR) does with the same libjpeg-turbo:
/// default decompression parameters (ISLOW IDCT, fancy upsampling), out_color_space RGB for 1- and
/// 3-component files (grey is replicated by libjpeg), CMYK for 4-component files converted with
/// OpenCV's icvCvt_CMYK2BGR_8u_C4C3R (c' = k - ((255 - c) * k >> 8), no division by 255).
/// The EXIF block is the first APP1 marker after its first 6 bytes, without checking for "Exif\0\0",
/// because that is what OpenCV parses. EXIF orientation is applied by the caller.
static inline __attribute__((noinline)) int ci_decode_jpeg(const unsigned char *data, unsigned long size,
                                                           unsigned long long max_pixels, ci_image *out) {
    struct jpeg_decompress_struct cinfo;
    struct ci_jpeg_error jerr;
    struct jpeg_progress_mgr progress;
    unsigned char *volatile rgb = NULL;
    int status = CI_OK;

    memset(out, 0, sizeof *out);
    memset(&cinfo, 0, sizeof cinfo);
    memset(&jerr, 0, sizeof jerr);
    memset(&progress, 0, sizeof progress);
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = ci_jpeg_error_exit;
    jerr.pub.emit_message = ci_jpeg_emit_message;
    jerr.pub.output_message = ci_jpeg_output_message;
    jerr.out = out;
    jerr.in_header = 1;

    if (setjmp(jerr.jump)) {
        jpeg_destroy_decompress(&cinfo);
        free(rgb);
        free(out->exif);
        out->exif = NULL;
        out->exif_size = 0;
        out->pixels = NULL;
        return CI_ERROR;
    }

    jpeg_create_decompress(&cinfo);
    progress.progress_monitor = ci_jpeg_progress;
    cinfo.progress = &progress;
    jpeg_mem_src(&cinfo, data, size);
    jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(&cinfo, TRUE);
    jerr.in_header = 0;

    out->width = cinfo.image_width;
    out->height = cinfo.image_height;
    if ((unsigned long long)cinfo.image_width * cinfo.image_height > max_pixels) {
        jpeg_destroy_decompress(&cinfo);
        return CI_TOO_LARGE;
    }

    for (jpeg_saved_marker_ptr m = cinfo.marker_list; m != NULL; m = m->next) {
        if (m->marker == JPEG_APP0 + 1) {
            if (m->data_length > 6) {
                out->exif = (unsigned char *)malloc(m->data_length - 6);
                if (out->exif) {
                    memcpy(out->exif, m->data + 6, m->data_length - 6);
                    out->exif_size = m->data_length - 6;
                }
            }
            break;
        }
    }

    int cmyk = cinfo.num_components == 4;
    cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    cinfo.out_color_components = cmyk ? 4 : 3;
    jpeg_start_decompress(&cinfo);

    unsigned int w = cinfo.output_width, h = cinfo.output_height;
    if (cinfo.output_components != (cmyk ? 4 : 3)) {
        snprintf(out->message, sizeof out->message, "unexpected JPEG output components %d",
                 cinfo.output_components);
        longjmp(jerr.jump, 1);
    }
    rgb = (unsigned char *)malloc((size_t)w * h * 3 + 1);
    if (!rgb) {
        status = CI_NO_MEMORY;
        jpeg_destroy_decompress(&cinfo);
        free(out->exif);
        out->exif = NULL;
        out->exif_size = 0;
        return status;
    }
    JSAMPARRAY row = (*cinfo.mem->alloc_sarray)((j_common_ptr)&cinfo, JPOOL_IMAGE, w * 4, 1);
    while (cinfo.output_scanline < h) {
        unsigned int y = cinfo.output_scanline;
        if (jpeg_read_scanlines(&cinfo, row, 1) != 1) {
            snprintf(out->message, sizeof out->message, "JPEG decoder returned no scanline");
            longjmp(jerr.jump, 1);
        }
        unsigned char *dst = rgb + (size_t)y * w * 3;
        const unsigned char *src = row[0];
        if (cmyk) {
            for (unsigned int x = 0; x < w; x++) {
                int c = src[4 * x], m = src[4 * x + 1], yy = src[4 * x + 2], k = src[4 * x + 3];
                dst[3 * x + 0] = (unsigned char)(k - ((255 - c) * k >> 8));
                dst[3 * x + 1] = (unsigned char)(k - ((255 - m) * k >> 8));
                dst[3 * x + 2] = (unsigned char)(k - ((255 - yy) * k >> 8));
            }
        } else {
            memcpy(dst, src, (size_t)w * 3);
        }
    }
    // OpenCV sets its result to true before jpeg_finish_decompress, so an error while reading the
    // rest of the file to EOI (a bad marker after the last scan) still returns the image. Same here:
    // every pixel has been written, so such an error only ends the reading.
    if (setjmp(jerr.jump) == 0) {
        jpeg_finish_decompress(&cinfo);
    }
    out->message[0] = 0;
    jpeg_destroy_decompress(&cinfo);
    out->pixels = rgb;
    out->width = w;
    out->height = h;
    return status;
}

/* ------------------------------------------------------------------------------------------- PNG */

struct ci_png_source {
    const unsigned char *data;
    size_t size;
    size_t pos;
    ci_image *out;
};

static void ci_png_error(png_structp png, png_const_charp message) {
    struct ci_png_source *src = (struct ci_png_source *)png_get_error_ptr(png);
    snprintf(src->out->message, sizeof src->out->message, "%s", message ? message : "libpng error");
    png_longjmp(png, 1);
}

static void ci_png_warning(png_structp png, png_const_charp message) {
    (void)png;
    (void)message;
}

/// Same message as OpenCV's readDataFromBuf when the buffer runs out.
static void ci_png_read(png_structp png, png_bytep dst, size_t length) {
    struct ci_png_source *src = (struct ci_png_source *)png_get_io_ptr(png);
    if (length > src->size - src->pos) {
        png_error(png, "PNG input buffer is incomplete");
        return;
    }
    memcpy(dst, src->data + src->pos, length);
    src->pos += length;
}

/// Decodes a PNG to RGB with the transform sequence of OpenCV 4.6 PngDecoder::readData for an
/// 8-bit 3-channel destination: png_set_strip_16 (keeps the high byte; no rounding), png_set_strip_alpha
/// (alpha is dropped, never composited; palette tRNS likewise), png_set_palette_to_rgb,
/// png_set_expand_gray_1_2_4_to_8, png_set_gray_to_rgb, interlace handling, no gamma handling.
/// png_read_end is called, so a file without IEND fails as it does in cv2. The EXIF block is the
/// eXIf chunk, looked up in the main info and then in the end info (cv2 honours both).
static inline __attribute__((noinline)) int ci_decode_png(const unsigned char *data, size_t size,
                                                          unsigned long long max_pixels, ci_image *out) {
    struct ci_png_source src;
    png_structp png = NULL;
    png_infop info = NULL, end_info = NULL;
    unsigned char *volatile rgb = NULL;
    png_bytepp volatile rows = NULL;

    memset(out, 0, sizeof *out);
    src.data = data;
    src.size = size;
    src.pos = 0;
    src.out = out;

    png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, ci_png_error, ci_png_warning);
    if (!png) return CI_NO_MEMORY;
    info = png_create_info_struct(png);
    end_info = png_create_info_struct(png);
    if (!info || !end_info) {
        png_destroy_read_struct(&png, &info, &end_info);
        return CI_NO_MEMORY;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, &end_info);
        free(rgb);
        free(rows);
        free(out->exif);
        out->exif = NULL;
        out->exif_size = 0;
        out->pixels = NULL;
        return CI_ERROR;
    }
    png_set_read_fn(png, &src, ci_png_read);
    png_read_info(png, info);

    png_uint_32 w = 0, h = 0;
    int bit_depth = 0, color_type = 0;
    png_get_IHDR(png, info, &w, &h, &bit_depth, &color_type, NULL, NULL, NULL);
    out->width = w;
    out->height = h;
    if ((unsigned long long)w * h > max_pixels) {
        png_destroy_read_struct(&png, &info, &end_info);
        return CI_TOO_LARGE;
    }

    if (bit_depth == 16) png_set_strip_16(png);
    png_set_strip_alpha(png);
    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if ((color_type & PNG_COLOR_MASK_COLOR) == 0 && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if ((color_type & PNG_COLOR_MASK_COLOR) == 0) png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);

    if (png_get_rowbytes(png, info) != (size_t)w * 3) {
        snprintf(out->message, sizeof out->message, "unexpected PNG row size %lu for width %u",
                 (unsigned long)png_get_rowbytes(png, info), (unsigned)w);
        png_longjmp(png, 1);
    }
    rgb = (unsigned char *)malloc((size_t)w * h * 3 + 1);
    rows = (png_bytepp)malloc(sizeof(png_bytep) * ((size_t)h + 1));
    if (!rgb || !rows) {
        png_destroy_read_struct(&png, &info, &end_info);
        free(rgb);
        free(rows);
        return CI_NO_MEMORY;
    }
    for (png_uint_32 y = 0; y < h; y++) rows[y] = rgb + (size_t)y * w * 3;
    png_read_image(png, rows);
    png_read_end(png, end_info);

#ifdef PNG_eXIf_SUPPORTED
    {
        png_uint_32 num_exif = 0;
        png_bytep exif = NULL;
        if (png_get_valid(png, info, PNG_INFO_eXIf))
            png_get_eXIf_1(png, info, &num_exif, &exif);
        else if (png_get_valid(png, end_info, PNG_INFO_eXIf))
            png_get_eXIf_1(png, end_info, &num_exif, &exif);
        if (exif && num_exif > 0) {
            out->exif = (unsigned char *)malloc(num_exif);
            if (out->exif) {
                memcpy(out->exif, exif, num_exif);
                out->exif_size = num_exif;
            }
        }
    }
#endif

    png_destroy_read_struct(&png, &info, &end_info);
    free(rows);
    out->pixels = rgb;
    return CI_OK;
}


/// Writes an 8-bit RGB image as a PNG file with libpng's simplified API (which reports errors through the
/// png_image struct, not longjmp). Returns 0 on success, else -1 with `message` (64 bytes) set.
static inline int ci_write_png_rgb(const char *path, int width, int height, const unsigned char *rgb, char *message) {
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    image.width = (png_uint_32)width;
    image.height = (png_uint_32)height;
    image.format = PNG_FORMAT_RGB;
    if (!png_image_write_to_file(&image, path, 0, rgb, width * 3, NULL)) {
        strncpy(message, image.message, 63);
        message[63] = 0;
        png_image_free(&image);
        return -1;
    }
    return 0;
}

#endif
