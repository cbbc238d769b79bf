/* tokenizer.c — SentencePiece-style and byte-level BPE tokenizers built from GGUF metadata.
 *
 * Design notes
 *  1. Vocabulary: every token's text is copied into one arena and indexed by an open-addressing
 *     hash (FNV-1a over the bytes). Each token's decoded piece (what eng_tok_piece returns) is
 *     precomputed at load, so decoding is a table lookup.
 *  2. Encoding = special-token split -> per fragment: SPM (escape spaces, merge the whole fragment)
 *     or BPE (pre-tokenize into words, merge each word). One merge engine serves both: symbols in
 *     a doubly linked list, candidate pairs in a binary heap ordered by priority (SPM: the merged
 *     token's score; BPE: minus the merge rank) then by leftmost position, stale pairs skipped
 *     when popped (their symbols changed size). This is SentencePiece's and GPT-2's algorithm.
 *  3. BPE runs on ids, not text: each byte of a word starts as the token of its byte-level code
 *     point, and a pair merges when (left id, right id) is a known merge. Invalid UTF-8 bytes are
 *     kept as single bytes (not replaced by U+FFFD), so every input round-trips.
 *  4. The pre-tokenizer is GPT-2's regex written out as a scanner over code point classes
 *     (letter, number, whitespace, other) from the table below:
 *       's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *     "smollm" (and the starcoder family) first isolate each \p{N} code point.
 */
#include "tokenizer.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/status.h"

/* ---------------------------------------------------------------- unicode classes ------------- */

enum { U_NONE = 0, U_L = 1, U_N = 2, U_S = 3, U_O = 4 };

typedef struct uni_range {
    uint32_t lo, hi;
    uint8_t cls;
} uni_range_t;

/* Letter (L*) and number (N*) code point ranges, Unicode 14.0.0, sorted; generated with Python's
 * unicodedata: consecutive code points of the same major category form one range. */
static const uni_range_t UNI_RANGES[] = {
    {0x30, 0x39, U_N}, {0x41, 0x5A, U_L}, {0x61, 0x7A, U_L}, {0xAA, 0xAA, U_L}, {0xB2, 0xB3, U_N},
    {0xB5, 0xB5, U_L}, {0xB9, 0xB9, U_N}, {0xBA, 0xBA, U_L}, {0xBC, 0xBE, U_N}, {0xC0, 0xD6, U_L},
    {0xD8, 0xF6, U_L}, {0xF8, 0x2C1, U_L}, {0x2C6, 0x2D1, U_L}, {0x2E0, 0x2E4, U_L},
    {0x2EC, 0x2EC, U_L}, {0x2EE, 0x2EE, U_L}, {0x370, 0x374, U_L}, {0x376, 0x377, U_L},
    {0x37A, 0x37D, U_L}, {0x37F, 0x37F, U_L}, {0x386, 0x386, U_L}, {0x388, 0x38A, U_L},
    {0x38C, 0x38C, U_L}, {0x38E, 0x3A1, U_L}, {0x3A3, 0x3F5, U_L}, {0x3F7, 0x481, U_L},
    {0x48A, 0x52F, U_L}, {0x531, 0x556, U_L}, {0x559, 0x559, U_L}, {0x560, 0x588, U_L},
    {0x5D0, 0x5EA, U_L}, {0x5EF, 0x5F2, U_L}, {0x620, 0x64A, U_L}, {0x660, 0x669, U_N},
    {0x66E, 0x66F, U_L}, {0x671, 0x6D3, U_L}, {0x6D5, 0x6D5, U_L}, {0x6E5, 0x6E6, U_L},
    {0x6EE, 0x6EF, U_L}, {0x6F0, 0x6F9, U_N}, {0x6FA, 0x6FC, U_L}, {0x6FF, 0x6FF, U_L},
    {0x710, 0x710, U_L}, {0x712, 0x72F, U_L}, {0x74D, 0x7A5, U_L}, {0x7B1, 0x7B1, U_L},
    {0x7C0, 0x7C9, U_N}, {0x7CA, 0x7EA, U_L}, {0x7F4, 0x7F5, U_L}, {0x7FA, 0x7FA, U_L},
    {0x800, 0x815, U_L}, {0x81A, 0x81A, U_L}, {0x824, 0x824, U_L}, {0x828, 0x828, U_L},
    {0x840, 0x858, U_L}, {0x860, 0x86A, U_L}, {0x870, 0x887, U_L}, {0x889, 0x88E, U_L},
    {0x8A0, 0x8C9, U_L}, {0x904, 0x939, U_L}, {0x93D, 0x93D, U_L}, {0x950, 0x950, U_L},
    {0x958, 0x961, U_L}, {0x966, 0x96F, U_N}, {0x971, 0x980, U_L}, {0x985, 0x98C, U_L},
    {0x98F, 0x990, U_L}, {0x993, 0x9A8, U_L}, {0x9AA, 0x9B0, U_L}, {0x9B2, 0x9B2, U_L},
    {0x9B6, 0x9B9, U_L}, {0x9BD, 0x9BD, U_L}, {0x9CE, 0x9CE, U_L}, {0x9DC, 0x9DD, U_L},
    {0x9DF, 0x9E1, U_L}, {0x9E6, 0x9EF, U_N}, {0x9F0, 0x9F1, U_L}, {0x9F4, 0x9F9, U_N},
    {0x9FC, 0x9FC, U_L}, {0xA05, 0xA0A, U_L}, {0xA0F, 0xA10, U_L}, {0xA13, 0xA28, U_L},
    {0xA2A, 0xA30, U_L}, {0xA32, 0xA33, U_L}, {0xA35, 0xA36, U_L}, {0xA38, 0xA39, U_L},
    {0xA59, 0xA5C, U_L}, {0xA5E, 0xA5E, U_L}, {0xA66, 0xA6F, U_N}, {0xA72, 0xA74, U_L},
    {0xA85, 0xA8D, U_L}, {0xA8F, 0xA91, U_L}, {0xA93, 0xAA8, U_L}, {0xAAA, 0xAB0, U_L},
    {0xAB2, 0xAB3, U_L}, {0xAB5, 0xAB9, U_L}, {0xABD, 0xABD, U_L}, {0xAD0, 0xAD0, U_L},
    {0xAE0, 0xAE1, U_L}, {0xAE6, 0xAEF, U_N}, {0xAF9, 0xAF9, U_L}, {0xB05, 0xB0C, U_L},
    {0xB0F, 0xB10, U_L}, {0xB13, 0xB28, U_L}, {0xB2A, 0xB30, U_L}, {0xB32, 0xB33, U_L},
    {0xB35, 0xB39, U_L}, {0xB3D, 0xB3D, U_L}, {0xB5C, 0xB5D, U_L}, {0xB5F, 0xB61, U_L},
    {0xB66, 0xB6F, U_N}, {0xB71, 0xB71, U_L}, {0xB72, 0xB77, U_N}, {0xB83, 0xB83, U_L},
    {0xB85, 0xB8A, U_L}, {0xB8E, 0xB90, U_L}, {0xB92, 0xB95, U_L}, {0xB99, 0xB9A, U_L},
    {0xB9C, 0xB9C, U_L}, {0xB9E, 0xB9F, U_L}, {0xBA3, 0xBA4, U_L}, {0xBA8, 0xBAA, U_L},
    {0xBAE, 0xBB9, U_L}, {0xBD0, 0xBD0, U_L}, {0xBE6, 0xBF2, U_N}, {0xC05, 0xC0C, U_L},
    {0xC0E, 0xC10, U_L}, {0xC12, 0xC28, U_L}, {0xC2A, 0xC39, U_L}, {0xC3D, 0xC3D, U_L},
    {0xC58, 0xC5A, U_L}, {0xC5D, 0xC5D, U_L}, {0xC60, 0xC61, U_L}, {0xC66, 0xC6F, U_N},
    {0xC78, 0xC7E, U_N}, {0xC80, 0xC80, U_L}, {0xC85, 0xC8C, U_L}, {0xC8E, 0xC90, U_L},
    {0xC92, 0xCA8, U_L}, {0xCAA, 0xCB3, U_L}, {0xCB5, 0xCB9, U_L}, {0xCBD, 0xCBD, U_L},
    {0xCDD, 0xCDE, U_L}, {0xCE0, 0xCE1, U_L}, {0xCE6, 0xCEF, U_N}, {0xCF1, 0xCF2, U_L},
    {0xD04, 0xD0C, U_L}, {0xD0E, 0xD10, U_L}, {0xD12, 0xD3A, U_L}, {0xD3D, 0xD3D, U_L},
    {0xD4E, 0xD4E, U_L}, {0xD54, 0xD56, U_L}, {0xD58, 0xD5E, U_N}, {0xD5F, 0xD61, U_L},
    {0xD66, 0xD78, U_N}, {0xD7A, 0xD7F, U_L}, {0xD85, 0xD96, U_L}, {0xD9A, 0xDB1, U_L},
    {0xDB3, 0xDBB, U_L}, {0xDBD, 0xDBD, U_L}, {0xDC0, 0xDC6, U_L}, {0xDE6, 0xDEF, U_N},
    {0xE01, 0xE30, U_L}, {0xE32, 0xE33, U_L}, {0xE40, 0xE46, U_L}, {0xE50, 0xE59, U_N},
    {0xE81, 0xE82, U_L}, {0xE84, 0xE84, U_L}, {0xE86, 0xE8A, U_L}, {0xE8C, 0xEA3, U_L},
    {0xEA5, 0xEA5, U_L}, {0xEA7, 0xEB0, U_L}, {0xEB2, 0xEB3, U_L}, {0xEBD, 0xEBD, U_L},
    {0xEC0, 0xEC4, U_L}, {0xEC6, 0xEC6, U_L}, {0xED0, 0xED9, U_N}, {0xEDC, 0xEDF, U_L},
    {0xF00, 0xF00, U_L}, {0xF20, 0xF33, U_N}, {0xF40, 0xF47, U_L}, {0xF49, 0xF6C, U_L},
    {0xF88, 0xF8C, U_L}, {0x1000, 0x102A, U_L}, {0x103F, 0x103F, U_L}, {0x1040, 0x1049, U_N},
    {0x1050, 0x1055, U_L}, {0x105A, 0x105D, U_L}, {0x1061, 0x1061, U_L}, {0x1065, 0x1066, U_L},
    {0x106E, 0x1070, U_L}, {0x1075, 0x1081, U_L}, {0x108E, 0x108E, U_L}, {0x1090, 0x1099, U_N},
    {0x10A0, 0x10C5, U_L}, {0x10C7, 0x10C7, U_L}, {0x10CD, 0x10CD, U_L}, {0x10D0, 0x10FA, U_L},
    {0x10FC, 0x1248, U_L}, {0x124A, 0x124D, U_L}, {0x1250, 0x1256, U_L}, {0x1258, 0x1258, U_L},
    {0x125A, 0x125D, U_L}, {0x1260, 0x1288, U_L}, {0x128A, 0x128D, U_L}, {0x1290, 0x12B0, U_L},
    {0x12B2, 0x12B5, U_L}, {0x12B8, 0x12BE, U_L}, {0x12C0, 0x12C0, U_L}, {0x12C2, 0x12C5, U_L},
    {0x12C8, 0x12D6, U_L}, {0x12D8, 0x1310, U_L}, {0x1312, 0x1315, U_L}, {0x1318, 0x135A, U_L},
    {0x1369, 0x137C, U_N}, {0x1380, 0x138F, U_L}, {0x13A0, 0x13F5, U_L}, {0x13F8, 0x13FD, U_L},
    {0x1401, 0x166C, U_L}, {0x166F, 0x167F, U_L}, {0x1681, 0x169A, U_L}, {0x16A0, 0x16EA, U_L},
    {0x16EE, 0x16F0, U_N}, {0x16F1, 0x16F8, U_L}, {0x1700, 0x1711, U_L}, {0x171F, 0x1731, U_L},
    {0x1740, 0x1751, U_L}, {0x1760, 0x176C, U_L}, {0x176E, 0x1770, U_L}, {0x1780, 0x17B3, U_L},
    {0x17D7, 0x17D7, U_L}, {0x17DC, 0x17DC, U_L}, {0x17E0, 0x17E9, U_N}, {0x17F0, 0x17F9, U_N},
    {0x1810, 0x1819, U_N}, {0x1820, 0x1878, U_L}, {0x1880, 0x1884, U_L}, {0x1887, 0x18A8, U_L},
    {0x18AA, 0x18AA, U_L}, {0x18B0, 0x18F5, U_L}, {0x1900, 0x191E, U_L}, {0x1946, 0x194F, U_N},
    {0x1950, 0x196D, U_L}, {0x1970, 0x1974, U_L}, {0x1980, 0x19AB, U_L}, {0x19B0, 0x19C9, U_L},
    {0x19D0, 0x19DA, U_N}, {0x1A00, 0x1A16, U_L}, {0x1A20, 0x1A54, U_L}, {0x1A80, 0x1A89, U_N},
    {0x1A90, 0x1A99, U_N}, {0x1AA7, 0x1AA7, U_L}, {0x1B05, 0x1B33, U_L}, {0x1B45, 0x1B4C, U_L},
    {0x1B50, 0x1B59, U_N}, {0x1B83, 0x1BA0, U_L}, {0x1BAE, 0x1BAF, U_L}, {0x1BB0, 0x1BB9, U_N},
    {0x1BBA, 0x1BE5, U_L}, {0x1C00, 0x1C23, U_L}, {0x1C40, 0x1C49, U_N}, {0x1C4D, 0x1C4F, U_L},
    {0x1C50, 0x1C59, U_N}, {0x1C5A, 0x1C7D, U_L}, {0x1C80, 0x1C88, U_L}, {0x1C90, 0x1CBA, U_L},
    {0x1CBD, 0x1CBF, U_L}, {0x1CE9, 0x1CEC, U_L}, {0x1CEE, 0x1CF3, U_L}, {0x1CF5, 0x1CF6, U_L},
    {0x1CFA, 0x1CFA, U_L}, {0x1D00, 0x1DBF, U_L}, {0x1E00, 0x1F15, U_L}, {0x1F18, 0x1F1D, U_L},
    {0x1F20, 0x1F45, U_L}, {0x1F48, 0x1F4D, U_L}, {0x1F50, 0x1F57, U_L}, {0x1F59, 0x1F59, U_L},
    {0x1F5B, 0x1F5B, U_L}, {0x1F5D, 0x1F5D, U_L}, {0x1F5F, 0x1F7D, U_L}, {0x1F80, 0x1FB4, U_L},
    {0x1FB6, 0x1FBC, U_L}, {0x1FBE, 0x1FBE, U_L}, {0x1FC2, 0x1FC4, U_L}, {0x1FC6, 0x1FCC, U_L},
    {0x1FD0, 0x1FD3, U_L}, {0x1FD6, 0x1FDB, U_L}, {0x1FE0, 0x1FEC, U_L}, {0x1FF2, 0x1FF4, U_L},
    {0x1FF6, 0x1FFC, U_L}, {0x2070, 0x2070, U_N}, {0x2071, 0x2071, U_L}, {0x2074, 0x2079, U_N},
    {0x207F, 0x207F, U_L}, {0x2080, 0x2089, U_N}, {0x2090, 0x209C, U_L}, {0x2102, 0x2102, U_L},
    {0x2107, 0x2107, U_L}, {0x210A, 0x2113, U_L}, {0x2115, 0x2115, U_L}, {0x2119, 0x211D, U_L},
    {0x2124, 0x2124, U_L}, {0x2126, 0x2126, U_L}, {0x2128, 0x2128, U_L}, {0x212A, 0x212D, U_L},
    {0x212F, 0x2139, U_L}, {0x213C, 0x213F, U_L}, {0x2145, 0x2149, U_L}, {0x214E, 0x214E, U_L},
    {0x2150, 0x2182, U_N}, {0x2183, 0x2184, U_L}, {0x2185, 0x2189, U_N}, {0x2460, 0x249B, U_N},
    {0x24EA, 0x24FF, U_N}, {0x2776, 0x2793, U_N}, {0x2C00, 0x2CE4, U_L}, {0x2CEB, 0x2CEE, U_L},
    {0x2CF2, 0x2CF3, U_L}, {0x2CFD, 0x2CFD, U_N}, {0x2D00, 0x2D25, U_L}, {0x2D27, 0x2D27, U_L},
    {0x2D2D, 0x2D2D, U_L}, {0x2D30, 0x2D67, U_L}, {0x2D6F, 0x2D6F, U_L}, {0x2D80, 0x2D96, U_L},
    {0x2DA0, 0x2DA6, U_L}, {0x2DA8, 0x2DAE, U_L}, {0x2DB0, 0x2DB6, U_L}, {0x2DB8, 0x2DBE, U_L},
    {0x2DC0, 0x2DC6, U_L}, {0x2DC8, 0x2DCE, U_L}, {0x2DD0, 0x2DD6, U_L}, {0x2DD8, 0x2DDE, U_L},
    {0x2E2F, 0x2E2F, U_L}, {0x3005, 0x3006, U_L}, {0x3007, 0x3007, U_N}, {0x3021, 0x3029, U_N},
    {0x3031, 0x3035, U_L}, {0x3038, 0x303A, U_N}, {0x303B, 0x303C, U_L}, {0x3041, 0x3096, U_L},
    {0x309D, 0x309F, U_L}, {0x30A1, 0x30FA, U_L}, {0x30FC, 0x30FF, U_L}, {0x3105, 0x312F, U_L},
    {0x3131, 0x318E, U_L}, {0x3192, 0x3195, U_N}, {0x31A0, 0x31BF, U_L}, {0x31F0, 0x31FF, U_L},
    {0x3220, 0x3229, U_N}, {0x3248, 0x324F, U_N}, {0x3251, 0x325F, U_N}, {0x3280, 0x3289, U_N},
    {0x32B1, 0x32BF, U_N}, {0x3400, 0x4DBF, U_L}, {0x4E00, 0xA48C, U_L}, {0xA4D0, 0xA4FD, U_L},
    {0xA500, 0xA60C, U_L}, {0xA610, 0xA61F, U_L}, {0xA620, 0xA629, U_N}, {0xA62A, 0xA62B, U_L},
    {0xA640, 0xA66E, U_L}, {0xA67F, 0xA69D, U_L}, {0xA6A0, 0xA6E5, U_L}, {0xA6E6, 0xA6EF, U_N},
    {0xA717, 0xA71F, U_L}, {0xA722, 0xA788, U_L}, {0xA78B, 0xA7CA, U_L}, {0xA7D0, 0xA7D1, U_L},
    {0xA7D3, 0xA7D3, U_L}, {0xA7D5, 0xA7D9, U_L}, {0xA7F2, 0xA801, U_L}, {0xA803, 0xA805, U_L},
    {0xA807, 0xA80A, U_L}, {0xA80C, 0xA822, U_L}, {0xA830, 0xA835, U_N}, {0xA840, 0xA873, U_L},
    {0xA882, 0xA8B3, U_L}, {0xA8D0, 0xA8D9, U_N}, {0xA8F2, 0xA8F7, U_L}, {0xA8FB, 0xA8FB, U_L},
    {0xA8FD, 0xA8FE, U_L}, {0xA900, 0xA909, U_N}, {0xA90A, 0xA925, U_L}, {0xA930, 0xA946, U_L},
    {0xA960, 0xA97C, U_L}, {0xA984, 0xA9B2, U_L}, {0xA9CF, 0xA9CF, U_L}, {0xA9D0, 0xA9D9, U_N},
    {0xA9E0, 0xA9E4, U_L}, {0xA9E6, 0xA9EF, U_L}, {0xA9F0, 0xA9F9, U_N}, {0xA9FA, 0xA9FE, U_L},
    {0xAA00, 0xAA28, U_L}, {0xAA40, 0xAA42, U_L}, {0xAA44, 0xAA4B, U_L}, {0xAA50, 0xAA59, U_N},
    {0xAA60, 0xAA76, U_L}, {0xAA7A, 0xAA7A, U_L}, {0xAA7E, 0xAAAF, U_L}, {0xAAB1, 0xAAB1, U_L},
    {0xAAB5, 0xAAB6, U_L}, {0xAAB9, 0xAABD, U_L}, {0xAAC0, 0xAAC0, U_L}, {0xAAC2, 0xAAC2, U_L},
    {0xAADB, 0xAADD, U_L}, {0xAAE0, 0xAAEA, U_L}, {0xAAF2, 0xAAF4, U_L}, {0xAB01, 0xAB06, U_L},
    {0xAB09, 0xAB0E, U_L}, {0xAB11, 0xAB16, U_L}, {0xAB20, 0xAB26, U_L}, {0xAB28, 0xAB2E, U_L},
    {0xAB30, 0xAB5A, U_L}, {0xAB5C, 0xAB69, U_L}, {0xAB70, 0xABE2, U_L}, {0xABF0, 0xABF9, U_N},
    {0xAC00, 0xD7A3, U_L}, {0xD7B0, 0xD7C6, U_L}, {0xD7CB, 0xD7FB, U_L}, {0xF900, 0xFA6D, U_L},
    {0xFA70, 0xFAD9, U_L}, {0xFB00, 0xFB06, U_L}, {0xFB13, 0xFB17, U_L}, {0xFB1D, 0xFB1D, U_L},
    {0xFB1F, 0xFB28, U_L}, {0xFB2A, 0xFB36, U_L}, {0xFB38, 0xFB3C, U_L}, {0xFB3E, 0xFB3E, U_L},
    {0xFB40, 0xFB41, U_L}, {0xFB43, 0xFB44, U_L}, {0xFB46, 0xFBB1, U_L}, {0xFBD3, 0xFD3D, U_L},
    {0xFD50, 0xFD8F, U_L}, {0xFD92, 0xFDC7, U_L}, {0xFDF0, 0xFDFB, U_L}, {0xFE70, 0xFE74, U_L},
    {0xFE76, 0xFEFC, U_L}, {0xFF10, 0xFF19, U_N}, {0xFF21, 0xFF3A, U_L}, {0xFF41, 0xFF5A, U_L},
    {0xFF66, 0xFFBE, U_L}, {0xFFC2, 0xFFC7, U_L}, {0xFFCA, 0xFFCF, U_L}, {0xFFD2, 0xFFD7, U_L},
    {0xFFDA, 0xFFDC, U_L}, {0x10000, 0x1000B, U_L}, {0x1000D, 0x10026, U_L},
    {0x10028, 0x1003A, U_L}, {0x1003C, 0x1003D, U_L}, {0x1003F, 0x1004D, U_L},
    {0x10050, 0x1005D, U_L}, {0x10080, 0x100FA, U_L}, {0x10107, 0x10133, U_N},
    {0x10140, 0x10178, U_N}, {0x1018A, 0x1018B, U_N}, {0x10280, 0x1029C, U_L},
    {0x102A0, 0x102D0, U_L}, {0x102E1, 0x102FB, U_N}, {0x10300, 0x1031F, U_L},
    {0x10320, 0x10323, U_N}, {0x1032D, 0x10340, U_L}, {0x10341, 0x10341, U_N},
    {0x10342, 0x10349, U_L}, {0x1034A, 0x1034A, U_N}, {0x10350, 0x10375, U_L},
    {0x10380, 0x1039D, U_L}, {0x103A0, 0x103C3, U_L}, {0x103C8, 0x103CF, U_L},
    {0x103D1, 0x103D5, U_N}, {0x10400, 0x1049D, U_L}, {0x104A0, 0x104A9, U_N},
    {0x104B0, 0x104D3, U_L}, {0x104D8, 0x104FB, U_L}, {0x10500, 0x10527, U_L},
    {0x10530, 0x10563, U_L}, {0x10570, 0x1057A, U_L}, {0x1057C, 0x1058A, U_L},
    {0x1058C, 0x10592, U_L}, {0x10594, 0x10595, U_L}, {0x10597, 0x105A1, U_L},
    {0x105A3, 0x105B1, U_L}, {0x105B3, 0x105B9, U_L}, {0x105BB, 0x105BC, U_L},
    {0x10600, 0x10736, U_L}, {0x10740, 0x10755, U_L}, {0x10760, 0x10767, U_L},
    {0x10780, 0x10785, U_L}, {0x10787, 0x107B0, U_L}, {0x107B2, 0x107BA, U_L},
    {0x10800, 0x10805, U_L}, {0x10808, 0x10808, U_L}, {0x1080A, 0x10835, U_L},
    {0x10837, 0x10838, U_L}, {0x1083C, 0x1083C, U_L}, {0x1083F, 0x10855, U_L},
    {0x10858, 0x1085F, U_N}, {0x10860, 0x10876, U_L}, {0x10879, 0x1087F, U_N},
    {0x10880, 0x1089E, U_L}, {0x108A7, 0x108AF, U_N}, {0x108E0, 0x108F2, U_L},
    {0x108F4, 0x108F5, U_L}, {0x108FB, 0x108FF, U_N}, {0x10900, 0x10915, U_L},
    {0x10916, 0x1091B, U_N}, {0x10920, 0x10939, U_L}, {0x10980, 0x109B7, U_L},
    {0x109BC, 0x109BD, U_N}, {0x109BE, 0x109BF, U_L}, {0x109C0, 0x109CF, U_N},
    {0x109D2, 0x109FF, U_N}, {0x10A00, 0x10A00, U_L}, {0x10A10, 0x10A13, U_L},
    {0x10A15, 0x10A17, U_L}, {0x10A19, 0x10A35, U_L}, {0x10A40, 0x10A48, U_N},
    {0x10A60, 0x10A7C, U_L}, {0x10A7D, 0x10A7E, U_N}, {0x10A80, 0x10A9C, U_L},
    {0x10A9D, 0x10A9F, U_N}, {0x10AC0, 0x10AC7, U_L}, {0x10AC9, 0x10AE4, U_L},
    {0x10AEB, 0x10AEF, U_N}, {0x10B00, 0x10B35, U_L}, {0x10B40, 0x10B55, U_L},
    {0x10B58, 0x10B5F, U_N}, {0x10B60, 0x10B72, U_L}, {0x10B78, 0x10B7F, U_N},
    {0x10B80, 0x10B91, U_L}, {0x10BA9, 0x10BAF, U_N}, {0x10C00, 0x10C48, U_L},
    {0x10C80, 0x10CB2, U_L}, {0x10CC0, 0x10CF2, U_L}, {0x10CFA, 0x10CFF, U_N},
    {0x10D00, 0x10D23, U_L}, {0x10D30, 0x10D39, U_N}, {0x10E60, 0x10E7E, U_N},
    {0x10E80, 0x10EA9, U_L}, {0x10EB0, 0x10EB1, U_L}, {0x10F00, 0x10F1C, U_L},
    {0x10F1D, 0x10F26, U_N}, {0x10F27, 0x10F27, U_L}, {0x10F30, 0x10F45, U_L},
    {0x10F51, 0x10F54, U_N}, {0x10F70, 0x10F81, U_L}, {0x10FB0, 0x10FC4, U_L},
    {0x10FC5, 0x10FCB, U_N}, {0x10FE0, 0x10FF6, U_L}, {0x11003, 0x11037, U_L},
    {0x11052, 0x1106F, U_N}, {0x11071, 0x11072, U_L}, {0x11075, 0x11075, U_L},
    {0x11083, 0x110AF, U_L}, {0x110D0, 0x110E8, U_L}, {0x110F0, 0x110F9, U_N},
    {0x11103, 0x11126, U_L}, {0x11136, 0x1113F, U_N}, {0x11144, 0x11144, U_L},
    {0x11147, 0x11147, U_L}, {0x11150, 0x11172, U_L}, {0x11176, 0x11176, U_L},
    {0x11183, 0x111B2, U_L}, {0x111C1, 0x111C4, U_L}, {0x111D0, 0x111D9, U_N},
    {0x111DA, 0x111DA, U_L}, {0x111DC, 0x111DC, U_L}, {0x111E1, 0x111F4, U_N},
    {0x11200, 0x11211, U_L}, {0x11213, 0x1122B, U_L}, {0x11280, 0x11286, U_L},
    {0x11288, 0x11288, U_L}, {0x1128A, 0x1128D, U_L}, {0x1128F, 0x1129D, U_L},
    {0x1129F, 0x112A8, U_L}, {0x112B0, 0x112DE, U_L}, {0x112F0, 0x112F9, U_N},
    {0x11305, 0x1130C, U_L}, {0x1130F, 0x11310, U_L}, {0x11313, 0x11328, U_L},
    {0x1132A, 0x11330, U_L}, {0x11332, 0x11333, U_L}, {0x11335, 0x11339, U_L},
    {0x1133D, 0x1133D, U_L}, {0x11350, 0x11350, U_L}, {0x1135D, 0x11361, U_L},
    {0x11400, 0x11434, U_L}, {0x11447, 0x1144A, U_L}, {0x11450, 0x11459, U_N},
    {0x1145F, 0x11461, U_L}, {0x11480, 0x114AF, U_L}, {0x114C4, 0x114C5, U_L},
    {0x114C7, 0x114C7, U_L}, {0x114D0, 0x114D9, U_N}, {0x11580, 0x115AE, U_L},
    {0x115D8, 0x115DB, U_L}, {0x11600, 0x1162F, U_L}, {0x11644, 0x11644, U_L},
    {0x11650, 0x11659, U_N}, {0x11680, 0x116AA, U_L}, {0x116B8, 0x116B8, U_L},
    {0x116C0, 0x116C9, U_N}, {0x11700, 0x1171A, U_L}, {0x11730, 0x1173B, U_N},
    {0x11740, 0x11746, U_L}, {0x11800, 0x1182B, U_L}, {0x118A0, 0x118DF, U_L},
    {0x118E0, 0x118F2, U_N}, {0x118FF, 0x11906, U_L}, {0x11909, 0x11909, U_L},
    {0x1190C, 0x11913, U_L}, {0x11915, 0x11916, U_L}, {0x11918, 0x1192F, U_L},
    {0x1193F, 0x1193F, U_L}, {0x11941, 0x11941, U_L}, {0x11950, 0x11959, U_N},
    {0x119A0, 0x119A7, U_L}, {0x119AA, 0x119D0, U_L}, {0x119E1, 0x119E1, U_L},
    {0x119E3, 0x119E3, U_L}, {0x11A00, 0x11A00, U_L}, {0x11A0B, 0x11A32, U_L},
    {0x11A3A, 0x11A3A, U_L}, {0x11A50, 0x11A50, U_L}, {0x11A5C, 0x11A89, U_L},
    {0x11A9D, 0x11A9D, U_L}, {0x11AB0, 0x11AF8, U_L}, {0x11C00, 0x11C08, U_L},
    {0x11C0A, 0x11C2E, U_L}, {0x11C40, 0x11C40, U_L}, {0x11C50, 0x11C6C, U_N},
    {0x11C72, 0x11C8F, U_L}, {0x11D00, 0x11D06, U_L}, {0x11D08, 0x11D09, U_L},
    {0x11D0B, 0x11D30, U_L}, {0x11D46, 0x11D46, U_L}, {0x11D50, 0x11D59, U_N},
    {0x11D60, 0x11D65, U_L}, {0x11D67, 0x11D68, U_L}, {0x11D6A, 0x11D89, U_L},
    {0x11D98, 0x11D98, U_L}, {0x11DA0, 0x11DA9, U_N}, {0x11EE0, 0x11EF2, U_L},
    {0x11FB0, 0x11FB0, U_L}, {0x11FC0, 0x11FD4, U_N}, {0x12000, 0x12399, U_L},
    {0x12400, 0x1246E, U_N}, {0x12480, 0x12543, U_L}, {0x12F90, 0x12FF0, U_L},
    {0x13000, 0x1342E, U_L}, {0x14400, 0x14646, U_L}, {0x16800, 0x16A38, U_L},
    {0x16A40, 0x16A5E, U_L}, {0x16A60, 0x16A69, U_N}, {0x16A70, 0x16ABE, U_L},
    {0x16AC0, 0x16AC9, U_N}, {0x16AD0, 0x16AED, U_L}, {0x16B00, 0x16B2F, U_L},
    {0x16B40, 0x16B43, U_L}, {0x16B50, 0x16B59, U_N}, {0x16B5B, 0x16B61, U_N},
    {0x16B63, 0x16B77, U_L}, {0x16B7D, 0x16B8F, U_L}, {0x16E40, 0x16E7F, U_L},
    {0x16E80, 0x16E96, U_N}, {0x16F00, 0x16F4A, U_L}, {0x16F50, 0x16F50, U_L},
    {0x16F93, 0x16F9F, U_L}, {0x16FE0, 0x16FE1, U_L}, {0x16FE3, 0x16FE3, U_L},
    {0x17000, 0x187F7, U_L}, {0x18800, 0x18CD5, U_L}, {0x18D00, 0x18D08, U_L},
    {0x1AFF0, 0x1AFF3, U_L}, {0x1AFF5, 0x1AFFB, U_L}, {0x1AFFD, 0x1AFFE, U_L},
    {0x1B000, 0x1B122, U_L}, {0x1B150, 0x1B152, U_L}, {0x1B164, 0x1B167, U_L},
    {0x1B170, 0x1B2FB, U_L}, {0x1BC00, 0x1BC6A, U_L}, {0x1BC70, 0x1BC7C, U_L},
    {0x1BC80, 0x1BC88, U_L}, {0x1BC90, 0x1BC99, U_L}, {0x1D2E0, 0x1D2F3, U_N},
    {0x1D360, 0x1D378, U_N}, {0x1D400, 0x1D454, U_L}, {0x1D456, 0x1D49C, U_L},
    {0x1D49E, 0x1D49F, U_L}, {0x1D4A2, 0x1D4A2, U_L}, {0x1D4A5, 0x1D4A6, U_L},
    {0x1D4A9, 0x1D4AC, U_L}, {0x1D4AE, 0x1D4B9, U_L}, {0x1D4BB, 0x1D4BB, U_L},
    {0x1D4BD, 0x1D4C3, U_L}, {0x1D4C5, 0x1D505, U_L}, {0x1D507, 0x1D50A, U_L},
    {0x1D50D, 0x1D514, U_L}, {0x1D516, 0x1D51C, U_L}, {0x1D51E, 0x1D539, U_L},
    {0x1D53B, 0x1D53E, U_L}, {0x1D540, 0x1D544, U_L}, {0x1D546, 0x1D546, U_L},
    {0x1D54A, 0x1D550, U_L}, {0x1D552, 0x1D6A5, U_L}, {0x1D6A8, 0x1D6C0, U_L},
    {0x1D6C2, 0x1D6DA, U_L}, {0x1D6DC, 0x1D6FA, U_L}, {0x1D6FC, 0x1D714, U_L},
    {0x1D716, 0x1D734, U_L}, {0x1D736, 0x1D74E, U_L}, {0x1D750, 0x1D76E, U_L},
    {0x1D770, 0x1D788, U_L}, {0x1D78A, 0x1D7A8, U_L}, {0x1D7AA, 0x1D7C2, U_L},
    {0x1D7C4, 0x1D7CB, U_L}, {0x1D7CE, 0x1D7FF, U_N}, {0x1DF00, 0x1DF1E, U_L},
    {0x1E100, 0x1E12C, U_L}, {0x1E137, 0x1E13D, U_L}, {0x1E140, 0x1E149, U_N},
    {0x1E14E, 0x1E14E, U_L}, {0x1E290, 0x1E2AD, U_L}, {0x1E2C0, 0x1E2EB, U_L},
    {0x1E2F0, 0x1E2F9, U_N}, {0x1E7E0, 0x1E7E6, U_L}, {0x1E7E8, 0x1E7EB, U_L},
    {0x1E7ED, 0x1E7EE, U_L}, {0x1E7F0, 0x1E7FE, U_L}, {0x1E800, 0x1E8C4, U_L},
    {0x1E8C7, 0x1E8CF, U_N}, {0x1E900, 0x1E943, U_L}, {0x1E94B, 0x1E94B, U_L},
    {0x1E950, 0x1E959, U_N}, {0x1EC71, 0x1ECAB, U_N}, {0x1ECAD, 0x1ECAF, U_N},
    {0x1ECB1, 0x1ECB4, U_N}, {0x1ED01, 0x1ED2D, U_N}, {0x1ED2F, 0x1ED3D, U_N},
    {0x1EE00, 0x1EE03, U_L}, {0x1EE05, 0x1EE1F, U_L}, {0x1EE21, 0x1EE22, U_L},
    {0x1EE24, 0x1EE24, U_L}, {0x1EE27, 0x1EE27, U_L}, {0x1EE29, 0x1EE32, U_L},
    {0x1EE34, 0x1EE37, U_L}, {0x1EE39, 0x1EE39, U_L}, {0x1EE3B, 0x1EE3B, U_L},
    {0x1EE42, 0x1EE42, U_L}, {0x1EE47, 0x1EE47, U_L}, {0x1EE49, 0x1EE49, U_L},
    {0x1EE4B, 0x1EE4B, U_L}, {0x1EE4D, 0x1EE4F, U_L}, {0x1EE51, 0x1EE52, U_L},
    {0x1EE54, 0x1EE54, U_L}, {0x1EE57, 0x1EE57, U_L}, {0x1EE59, 0x1EE59, U_L},
    {0x1EE5B, 0x1EE5B, U_L}, {0x1EE5D, 0x1EE5D, U_L}, {0x1EE5F, 0x1EE5F, U_L},
    {0x1EE61, 0x1EE62, U_L}, {0x1EE64, 0x1EE64, U_L}, {0x1EE67, 0x1EE6A, U_L},
    {0x1EE6C, 0x1EE72, U_L}, {0x1EE74, 0x1EE77, U_L}, {0x1EE79, 0x1EE7C, U_L},
    {0x1EE7E, 0x1EE7E, U_L}, {0x1EE80, 0x1EE89, U_L}, {0x1EE8B, 0x1EE9B, U_L},
    {0x1EEA1, 0x1EEA3, U_L}, {0x1EEA5, 0x1EEA9, U_L}, {0x1EEAB, 0x1EEBB, U_L},
    {0x1F100, 0x1F10C, U_N}, {0x1FBF0, 0x1FBF9, U_N}, {0x20000, 0x2A6DF, U_L},
    {0x2A700, 0x2B738, U_L}, {0x2B740, 0x2B81D, U_L}, {0x2B820, 0x2CEA1, U_L},
    {0x2CEB0, 0x2EBE0, U_L}, {0x2F800, 0x2FA1D, U_L}, {0x30000, 0x3134A, U_L},
};

static int is_space_cp(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
           c == 0x205f || c == 0x3000;
}

static int cp_class(uint32_t c)
{
    if (is_space_cp(c)) return U_S;
    size_t lo = 0, hi = sizeof UNI_RANGES / sizeof UNI_RANGES[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < UNI_RANGES[mid].lo) hi = mid;
        else if (c > UNI_RANGES[mid].hi) lo = mid + 1;
        else return UNI_RANGES[mid].cls;
    }
    return U_O;
}

/* Length of the UTF-8 sequence a lead byte announces (1 for a stray continuation byte). */
static int utf8_len(uint8_t b)
{
    return b < 0x80 ? 1 : (b & 0xe0) == 0xc0 ? 2 : (b & 0xf0) == 0xe0 ? 3 : (b & 0xf8) == 0xf0 ? 4 : 1;
}

/* Decodes one valid UTF-8 sequence at s (n bytes left); 0 on an invalid or truncated one. */
static int utf8_decode(const uint8_t *s, size_t n, uint32_t *cp)
{
    int len = utf8_len(s[0]);
    if (len == 1) {
        *cp = s[0];
        return s[0] < 0x80;
    }
    if ((size_t)len > n) return 0;
    uint32_t c = s[0] & (0x7f >> len);
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        c = c << 6 | (s[i] & 0x3f);
    }
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < min[len] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;
    *cp = c;
    return len;
}

static int utf8_encode(uint32_t c, char *out)
{
    if (c < 0x80) { out[0] = (char)c; return 1; }
    if (c < 0x800) { out[0] = (char)(0xc0 | c >> 6); out[1] = (char)(0x80 | (c & 0x3f)); return 2; }
    out[0] = (char)(0xe0 | c >> 12);
    out[1] = (char)(0x80 | ((c >> 6) & 0x3f));
    out[2] = (char)(0x80 | (c & 0x3f));
    return 3; /* byte-level BPE code points are all below 0x800; SPM needs only U+2581 */
}

/* GPT-2's byte-to-unicode table: printable Latin-1 bytes map to themselves, the other 68 bytes
 * to 256, 257, ... in byte order. */
static uint32_t byte_to_cp(int b)
{
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return (uint32_t)b;
    int k = 0;
    for (int i = 0; i < b; i++)
        if (!((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || (i >= 174 && i <= 255))) k++;
    return 256u + (uint32_t)k;
}

/* ---------------------------------------------------------------- the tokenizer --------------- */

#define SPM_SPACE "\xe2\x96\x81" /* U+2581 '▁' */

enum { PRE_GPT2 = 0, PRE_DIGITS = 1 };

typedef struct merge {
    int32_t left, right, merged, rank;
} merge_t;

struct eng_tokenizer {
    eng_tok_kind_t kind;
    int n_vocab;
    char *text_arena;   /* all token texts, NUL-terminated */
    uint32_t *text_off; /* n_vocab + 1 offsets into text_arena */
    char *piece_arena;  /* decoded pieces */
    uint32_t *piece_off;/* n_vocab + 1 */
    float *score;       /* SPM scores (NULL for BPE) */
    uint8_t *type;      /* eng_tok_type_t per token */
    uint32_t *vslots;   /* text -> id + 1 */
    size_t vmask;
    merge_t *merges;    /* BPE: open-addressing table on (left, right) */
    size_t mmask;
    int32_t byte_tok[256]; /* SPM: <0xNN>; BPE: the token of byte's code point; -1 none */
    int16_t cp_byte[512];  /* BPE decode: code point -> byte, -1 none */
    int32_t *special;      /* special token ids, longest text first */
    int n_special;
    int32_t bos, eos, eot, unk;
    int add_bos, add_space_prefix, pre;
};

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static const char *tok_text(const eng_tokenizer_t *t, int32_t id) { return t->text_arena + t->text_off[id]; }
static size_t tok_len(const eng_tokenizer_t *t, int32_t id) { return t->text_off[id + 1] - t->text_off[id] - 1; }

static int32_t vocab_find(const eng_tokenizer_t *t, const char *s, size_t n)
{
    for (size_t h = (size_t)fnv(s, n) & t->vmask; t->vslots[h]; h = (h + 1) & t->vmask) {
        int32_t id = (int32_t)t->vslots[h] - 1;
        if (tok_len(t, id) == n && memcmp(tok_text(t, id), s, n) == 0) return id;
    }
    return -1;
}

static size_t pair_hash(int32_t a, int32_t b)
{
    uint64_t k = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) * 0x9e3779b97f4a7c15ull;
    return (size_t)(k >> 20);
}

static const merge_t *merge_find(const eng_tokenizer_t *t, int32_t a, int32_t b)
{
    for (size_t h = pair_hash(a, b) & t->mmask; t->merges[h].rank >= 0; h = (h + 1) & t->mmask)
        if (t->merges[h].left == a && t->merges[h].right == b) return &t->merges[h];
    return NULL;
}

void eng_tok_free(eng_tokenizer_t *t)
{
    if (!t) return;
    sl_free(t->text_arena);
    sl_free(t->text_off);
    sl_free(t->piece_arena);
    sl_free(t->piece_off);
    sl_free(t->score);
    sl_free(t->type);
    sl_free(t->vslots);
    sl_free(t->merges);
    sl_free(t->special);
    sl_free(t);
}

/* ---------------------------------------------------------------- loading --------------------- */

/* An optional token id key: absent or out of range (files write 2^32-1 for "none") gives -1. */
static int32_t special_id(eng_gguf_t *g, const char *key, int n_vocab)
{
    int64_t v;
    if (eng_gguf_get_i64(g, key, &v) != SL_OK || v < 0 || v >= n_vocab) return -1;
    return (int32_t)v;
}

static int flag(eng_gguf_t *g, const char *key, int def)
{
    int v;
    return eng_gguf_get_bool(g, key, &v) == SL_OK ? v : def;
}

/* The decoded piece of token id (see eng_tok_piece) for special = 0, into out (cap >= 4 * len). */
static size_t make_piece(const eng_tokenizer_t *t, int32_t id, char *out)
{
    const char *s = tok_text(t, id);
    size_t n = tok_len(t, id), k = 0;
    int type = t->type[id];
    if (type == ENG_TOKT_CONTROL || type == ENG_TOKT_UNUSED) return 0;
    if (type == ENG_TOKT_UNKNOWN) {
        memcpy(out, "\xe2\x96\x85", 3); /* U+2585, as llama.cpp shows an unknown token */
        return 3;
    }
    if (t->kind == ENG_TOK_SPM) {
        unsigned b;
        if (type == ENG_TOKT_BYTE && n == 6 && sscanf(s, "<0x%2x>", &b) == 1) {
            out[0] = (char)b;
            return 1;
        }
        for (size_t i = 0; i < n;)
            if (n - i >= 3 && memcmp(s + i, SPM_SPACE, 3) == 0) {
                out[k++] = ' ';
                i += 3;
            } else {
                out[k++] = s[i++];
            }
        return k;
    }
    if (type == ENG_TOKT_USER_DEFINED) {
        memcpy(out, s, n);
        return n;
    }
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int len = utf8_decode((const uint8_t *)s + i, n - i, &cp);
        if (len > 0 && cp < 512 && t->cp_byte[cp] >= 0) {
            out[k++] = (char)t->cp_byte[cp];
            i += (size_t)len;
        } else {
            len = len > 0 ? len : 1; /* not a byte-level code point: keep its bytes */
            memcpy(out + k, s + i, (size_t)len);
            k += (size_t)len;
            i += (size_t)len;
        }
    }
    return k;
}

static int cmp_special(const void *a, const void *b, void *ctx)
{
    const eng_tokenizer_t *t = ctx;
    size_t la = tok_len(t, *(const int32_t *)a), lb = tok_len(t, *(const int32_t *)b);
    return la != lb ? (la < lb ? 1 : -1) : (*(const int32_t *)a > *(const int32_t *)b) - (*(const int32_t *)a < *(const int32_t *)b);
}

static int load_vocab(eng_tokenizer_t *t, eng_gguf_t *g, char *err, int errlen)
{
    const char *file = eng_gguf_name(g);
    eng_gguf_arr_t toks, arr;
    int rc = eng_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks);
    if (rc == SL_ENOTFOUND)
        return sl_errf(err, errlen, rc, "%s: no tokenizer (metadata key 'tokenizer.ggml.tokens' is missing)", file);
    if (rc != SL_OK || toks.elem != ENG_GGUF_STRING)
        return sl_errf(err, errlen, SL_EFORMAT, "%s: tokenizer.ggml.tokens is not an array of strings", file);
    if (toks.n == 0 || toks.n > (1u << 24))
        return sl_errf(err, errlen, SL_EFORMAT, "%s: vocabulary of %llu tokens (1 to 16M allowed)", file,
                    (unsigned long long)toks.n);
    int n = t->n_vocab = (int)toks.n;
    eng_gguf_str_t *s = sl_malloc((size_t)n * sizeof *s);
    t->text_off = sl_malloc(((size_t)n + 1) * sizeof *t->text_off);
    t->type = sl_malloc((size_t)n);
    size_t vcap = 16;
    while (vcap < (size_t)n * 2) vcap *= 2;
    t->vslots = sl_calloc(vcap, sizeof *t->vslots);
    t->vmask = vcap - 1;
    if (!s || !t->text_off || !t->type || !t->vslots) {
        sl_free(s);
        return sl_errf(err, errlen, SL_ENOMEM, "%s: out of memory for the vocabulary", file);
    }
    eng_gguf_arr_strings(&toks, s);
    size_t total = 0;
    for (int i = 0; i < n; i++) total += (size_t)s[i].n + 1;
    if (total > UINT32_MAX || !(t->text_arena = sl_malloc(total))) {
        sl_free(s);
        return sl_errf(err, errlen, SL_ENOMEM, "%s: out of memory for the vocabulary", file);
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        t->text_off[i] = (uint32_t)off;
        memcpy(t->text_arena + off, s[i].p, (size_t)s[i].n);
        t->text_arena[off + s[i].n] = 0;
        off += (size_t)s[i].n + 1;
        /* first occurrence wins for duplicate texts */
        size_t h = (size_t)fnv(s[i].p, (size_t)s[i].n) & t->vmask;
        for (; t->vslots[h]; h = (h + 1) & t->vmask) {
            int32_t o = (int32_t)t->vslots[h] - 1;
            if (s[o].n == s[i].n && memcmp(s[o].p, s[i].p, (size_t)s[i].n) == 0) break;
        }
        if (!t->vslots[h]) t->vslots[h] = (uint32_t)i + 1;
    }
    t->text_off[n] = (uint32_t)off;
    sl_free(s);

    /* types (default normal) and scores */
    memset(t->type, ENG_TOKT_NORMAL, (size_t)n);
    if (eng_gguf_get_arr(g, "tokenizer.ggml.token_type", &arr) == SL_OK) {
        if (arr.n != (uint64_t)n)
            return sl_errf(err, errlen, SL_EFORMAT, "%s: tokenizer.ggml.token_type has %llu entries for %d tokens",
                        file, (unsigned long long)arr.n, n);
        for (int i = 0; i < n; i++) {
            double v = eng_gguf_arr_num(&arr, (uint64_t)i);
            t->type[i] = v >= 1 && v <= 6 ? (uint8_t)v : ENG_TOKT_NORMAL;
        }
    }
    if (t->kind == ENG_TOK_SPM && eng_gguf_get_arr(g, "tokenizer.ggml.scores", &arr) == SL_OK) {
        if (arr.n != (uint64_t)n)
            return sl_errf(err, errlen, SL_EFORMAT, "%s: tokenizer.ggml.scores has %llu entries for %d tokens",
                        file, (unsigned long long)arr.n, n);
        if (!(t->score = sl_malloc((size_t)n * sizeof *t->score)))
            return sl_errf(err, errlen, SL_ENOMEM, "%s: out of memory", file);
        for (int i = 0; i < n; i++) t->score[i] = (float)eng_gguf_arr_num(&arr, (uint64_t)i);
    }
    return SL_OK;
}

static int load_merges(eng_tokenizer_t *t, eng_gguf_t *g, char *err, int errlen)
{
    const char *file = eng_gguf_name(g);
    eng_gguf_arr_t arr;
    int rc = eng_gguf_get_arr(g, "tokenizer.ggml.merges", &arr);
    if (rc == SL_ENOTFOUND) arr.n = 0;
    else if (rc != SL_OK || arr.elem != ENG_GGUF_STRING)
        return sl_errf(err, errlen, SL_EFORMAT, "%s: tokenizer.ggml.merges is not an array of strings", file);
    size_t cap = 16;
    while (cap < arr.n * 2) cap *= 2;
    eng_gguf_str_t *s = arr.n ? sl_malloc(arr.n * sizeof *s) : NULL;
    t->merges = sl_malloc(cap * sizeof *t->merges);
    if ((arr.n && !s) || !t->merges) {
        sl_free(s);
        return sl_errf(err, errlen, SL_ENOMEM, "%s: out of memory for the merges", file);
    }
    for (size_t i = 0; i < cap; i++) t->merges[i].rank = -1;
    t->mmask = cap - 1;
    if (arr.n) eng_gguf_arr_strings(&arr, s);
    char buf[512];
    for (uint64_t r = 0; r < arr.n; r++) {
        const char *sp = s[r].n > 1 ? memchr(s[r].p + 1, ' ', (size_t)s[r].n - 1) : NULL;
        if (!sp || s[r].n >= sizeof buf) {
            sl_errf(err, errlen, SL_EFORMAT, "%s: merge %llu ('%.*s') is not two tokens separated by a space",
                 file, (unsigned long long)r, (int)(s[r].n > 64 ? 64 : s[r].n), s[r].p);
            sl_free(s);
            return SL_EFORMAT;
        }
        size_t la = (size_t)(sp - s[r].p), lb = (size_t)s[r].n - la - 1;
        int32_t a = vocab_find(t, s[r].p, la), b = vocab_find(t, sp + 1, lb);
        memcpy(buf, s[r].p, la);
        memcpy(buf + la, sp + 1, lb);
        int32_t m = vocab_find(t, buf, la + lb);
        if (a < 0 || b < 0 || m < 0) continue; /* a merge into nothing we can emit */
        size_t h = pair_hash(a, b) & t->mmask;
        while (t->merges[h].rank >= 0 && !(t->merges[h].left == a && t->merges[h].right == b))
            h = (h + 1) & t->mmask;
        if (t->merges[h].rank < 0) t->merges[h] = (merge_t){a, b, m, (int32_t)r};
    }
    sl_free(s);
    return SL_OK;
}

static int build(eng_tokenizer_t *t, eng_gguf_t *g, char *err, int errlen)
{
    const char *file = eng_gguf_name(g);
    eng_gguf_str_t model;
    int rc = eng_gguf_get_str(g, "tokenizer.ggml.model", &model);
    if (rc == SL_ENOTFOUND)
        return sl_errf(err, errlen, rc, "%s: no tokenizer (metadata key 'tokenizer.ggml.model' is missing)", file);
    if (rc != SL_OK) return sl_errf(err, errlen, rc, "%s", eng_gguf_errmsg(g));
    if (model.n == 5 && memcmp(model.p, "llama", 5) == 0) t->kind = ENG_TOK_SPM;
    else if (model.n == 4 && memcmp(model.p, "gpt2", 4) == 0) t->kind = ENG_TOK_BPE;
    else
        return sl_errf(err, errlen, SL_EUNSUPPORTED,
                    "%s: tokenizer model '%.*s' is not supported (sluice reads 'llama' and 'gpt2')", file,
                    (int)(model.n > 64 ? 64 : model.n), model.p);
    if ((rc = load_vocab(t, g, err, errlen)) != SL_OK) return rc;
    int n = t->n_vocab;
    if (t->kind == ENG_TOK_BPE && (rc = load_merges(t, g, err, errlen)) != SL_OK) return rc;

    eng_gguf_str_t pre;
    t->pre = PRE_GPT2;
    if (eng_gguf_get_str(g, "tokenizer.ggml.pre", &pre) == SL_OK) {
        static const char *const digit_pres[] = {"smollm", "starcoder", "refact", "command-r",
                                                 "codeshell", "exaone", "minerva-7b"};
        for (size_t i = 0; i < sizeof digit_pres / sizeof digit_pres[0]; i++)
            if (pre.n == strlen(digit_pres[i]) && memcmp(pre.p, digit_pres[i], (size_t)pre.n) == 0)
                t->pre = PRE_DIGITS;
    }
    t->bos = special_id(g, "tokenizer.ggml.bos_token_id", n);
    t->eos = special_id(g, "tokenizer.ggml.eos_token_id", n);
    t->unk = special_id(g, "tokenizer.ggml.unknown_token_id", n);
    t->eot = special_id(g, "tokenizer.ggml.eot_token_id", n);
    static const char *const eot_names[] = {"<|im_end|>", "<|eot_id|>", "<end_of_turn>"};
    for (size_t i = 0; t->eot < 0 && i < sizeof eot_names / sizeof eot_names[0]; i++)
        t->eot = vocab_find(t, eot_names[i], strlen(eot_names[i]));
    t->add_bos = flag(g, "tokenizer.ggml.add_bos_token", t->kind == ENG_TOK_SPM);
    t->add_space_prefix = flag(g, "tokenizer.ggml.add_space_prefix", t->kind == ENG_TOK_SPM);

    /* byte tables */
    for (int b = 0; b < 256; b++) {
        char name[8];
        int len;
        if (t->kind == ENG_TOK_SPM) len = snprintf(name, sizeof name, "<0x%02X>", b);
        else len = utf8_encode(byte_to_cp(b), name);
        t->byte_tok[b] = vocab_find(t, name, (size_t)len);
    }
    memset(t->cp_byte, 0xff, sizeof t->cp_byte);
    for (int b = 0; b < 256; b++) t->cp_byte[byte_to_cp(b)] = (int16_t)b;

    /* special tokens: control and user-defined, matched longest first */
    if (!(t->special = sl_malloc((size_t)n * sizeof *t->special)))
        return sl_errf(err, errlen, SL_ENOMEM, "%s: out of memory", file);
    for (int i = 0; i < n; i++)
        if ((t->type[i] == ENG_TOKT_CONTROL || t->type[i] == ENG_TOKT_USER_DEFINED) && tok_len(t, i) > 0)
            t->special[t->n_special++] = i;
    qsort_r(t->special, (size_t)t->n_special, sizeof *t->special, cmp_special, t);

    /* decoded pieces */
    size_t total = 0;
    for (int i = 0; i < n; i++) total += tok_len(t, i);
    t->piece_off = sl_malloc(((size_t)n + 1) * sizeof *t->piece_off);
    t->piece_arena = sl_malloc(total + 3 * (size_t)n); /* only U+2585 outgrows its text */
    if (!t->piece_off || !t->piece_arena) return sl_errf(err, errlen, SL_ENOMEM, "%s: out of memory", file);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        t->piece_off[i] = (uint32_t)off;
        off += make_piece(t, i, t->piece_arena + off);
    }
    t->piece_off[n] = (uint32_t)off;
    return SL_OK;
}

int eng_tok_from_gguf(eng_gguf_t *g, eng_tokenizer_t **out, char *err, int errlen)
{
    *out = NULL;
    eng_tokenizer_t *t = sl_calloc(1, sizeof *t);
    if (!t) return sl_errf(err, errlen, SL_ENOMEM, "%s: out of memory", eng_gguf_name(g));
    int rc = build(t, g, err, errlen);
    if (rc != SL_OK) {
        eng_tok_free(t);
        return rc;
    }
    *out = t;
    return SL_OK;
}

/* ---------------------------------------------------------------- encoding -------------------- */

typedef struct sym {
    int32_t start, len; /* bytes of the (escaped) text */
    int32_t prev, next; /* linked list; -1 at the ends */
    int32_t id;         /* token of this symbol's text, -1 if none */
} sym_t;

typedef struct cand {
    double prio;        /* higher merges first */
    int32_t left, right, size, merged;
} cand_t;

/* Per-call scratch; buffers grow and are reused across the words of one call. */
typedef struct scratch {
    sym_t *sym;
    size_t sym_cap;
    cand_t *heap;
    size_t heap_n, heap_cap;
    char *buf;
    size_t buf_cap;
    uint32_t *ucp, *uoff; /* BPE: code point and byte offset of each unit (+1 end offset) */
    uint8_t *ucls;
    size_t unit_cap;
    int32_t *out;
    int cap, n, oom;
} scratch_t;

static int grow(scratch_t *sc, void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 1;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = sl_realloc(*p, c * elem);
    if (!q) {
        sc->oom = 1;
        return 0;
    }
    *p = q;
    *cap = c;
    return 1;
}

static void emit(scratch_t *sc, int32_t id)
{
    if (sc->n < sc->cap) sc->out[sc->n] = id;
    if (sc->n < INT32_MAX) sc->n++;
}

static int cand_before(const cand_t *a, const cand_t *b)
{
    return a->prio > b->prio || (a->prio == b->prio && a->left < b->left);
}

static void heap_push(scratch_t *sc, cand_t c)
{
    if (!grow(sc, (void **)&sc->heap, &sc->heap_cap, sc->heap_n + 1, sizeof c)) return;
    size_t i = sc->heap_n++;
    while (i > 0 && cand_before(&c, &sc->heap[(i - 1) / 2])) {
        sc->heap[i] = sc->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    sc->heap[i] = c;
}

static cand_t heap_pop(scratch_t *sc)
{
    cand_t top = sc->heap[0], last = sc->heap[--sc->heap_n];
    size_t i = 0, n = sc->heap_n;
    for (;;) {
        size_t k = 2 * i + 1;
        if (k >= n) break;
        if (k + 1 < n && cand_before(&sc->heap[k + 1], &sc->heap[k])) k++;
        if (!cand_before(&sc->heap[k], &last)) break;
        sc->heap[i] = sc->heap[k];
        i = k;
    }
    if (n) sc->heap[i] = last;
    return top;
}

/* Queues the merge of symbols l and r if the vocabulary has one. */
static void try_pair(const eng_tokenizer_t *t, scratch_t *sc, const char *text, int32_t l, int32_t r)
{
    const sym_t *L = &sc->sym[l], *R = &sc->sym[r];
    cand_t c = {0, l, r, L->len + R->len, -1};
    if (t->kind == ENG_TOK_SPM) {
        c.merged = vocab_find(t, text + L->start, (size_t)c.size);
        if (c.merged < 0) return;
        c.prio = t->score ? t->score[c.merged] : 0.0;
    } else {
        const merge_t *m = L->id >= 0 && R->id >= 0 ? merge_find(t, L->id, R->id) : NULL;
        if (!m) return;
        c.merged = m->merged;
        c.prio = -(double)m->rank;
    }
    heap_push(sc, c);
}

/* Merges sc->sym[0..n) to a fixed point, then emits the resulting tokens. */
static void merge_and_emit(const eng_tokenizer_t *t, scratch_t *sc, const char *text, int32_t n)
{
    sc->heap_n = 0;
    for (int32_t i = 0; i + 1 < n; i++) try_pair(t, sc, text, i, i + 1);
    while (sc->heap_n > 0) {
        cand_t c = heap_pop(sc);
        sym_t *L = &sc->sym[c.left], *R = &sc->sym[c.right];
        if (L->len == 0 || R->len == 0 || L->len + R->len != c.size) continue; /* stale */
        L->len += R->len;
        L->id = c.merged;
        R->len = 0;
        L->next = R->next;
        if (R->next >= 0) sc->sym[R->next].prev = c.left;
        if (L->prev >= 0) try_pair(t, sc, text, L->prev, c.left);
        if (L->next >= 0) try_pair(t, sc, text, c.left, L->next);
    }
    for (int32_t i = n ? 0 : -1; i >= 0; i = sc->sym[i].next) {
        const sym_t *s = &sc->sym[i];
        if (s->id >= 0) {
            emit(sc, s->id);
        } else if (t->kind == ENG_TOK_SPM) { /* byte fallback */
            for (int32_t k = 0; k < s->len; k++) {
                int32_t b = t->byte_tok[(uint8_t)text[s->start + k]];
                if (b >= 0 || t->unk >= 0) emit(sc, b >= 0 ? b : t->unk);
            }
        } else if (t->unk >= 0) {
            emit(sc, t->unk);
        }
    }
}

static void link_syms(scratch_t *sc, int32_t n)
{
    for (int32_t i = 0; i < n; i++) {
        sc->sym[i].prev = i - 1;
        sc->sym[i].next = i + 1 < n ? i + 1 : -1;
    }
}

/* SPM: the fragment with its spaces escaped (and a leading one when asked), merged whole. */
static void spm_fragment(const eng_tokenizer_t *t, scratch_t *sc, const char *s, size_t n, int prefix)
{
    size_t need = 3 * (n + 1);
    if (!grow(sc, (void **)&sc->buf, &sc->buf_cap, need, 1)) return;
    size_t k = 0;
    if (prefix) {
        memcpy(sc->buf, SPM_SPACE, 3);
        k = 3;
    }
    for (size_t i = 0; i < n; i++)
        if (s[i] == ' ') {
            memcpy(sc->buf + k, SPM_SPACE, 3);
            k += 3;
        } else {
            sc->buf[k++] = s[i];
        }
    if (!grow(sc, (void **)&sc->sym, &sc->sym_cap, k, sizeof *sc->sym)) return;
    int32_t ns = 0;
    for (size_t i = 0; i < k;) {
        uint32_t cp;
        int dl = utf8_decode((const uint8_t *)sc->buf + i, k - i, &cp);
        size_t len = dl > 0 ? (size_t)dl : 1; /* an invalid byte stands alone (byte fallback) */
        sc->sym[ns] = (sym_t){(int32_t)i, (int32_t)len, 0, 0, vocab_find(t, sc->buf + i, len)};
        ns++;
        i += len;
    }
    link_syms(sc, ns);
    merge_and_emit(t, sc, sc->buf, ns);
}

/* BPE: one pre-tokenized word, bytes s[0..n). */
static void bpe_word(const eng_tokenizer_t *t, scratch_t *sc, const char *s, size_t n)
{
    if (!grow(sc, (void **)&sc->sym, &sc->sym_cap, n, sizeof *sc->sym)) return;
    for (size_t i = 0; i < n; i++)
        sc->sym[i] = (sym_t){(int32_t)i, 1, 0, 0, t->byte_tok[(uint8_t)s[i]]};
    link_syms(sc, (int32_t)n);
    merge_and_emit(t, sc, s, (int32_t)n);
}

/* GPT-2's pattern over units [a, b) of the current fragment (see the notes at the top). */
static void gpt2_split(const eng_tokenizer_t *t, scratch_t *sc, const char *text, int a, int b)
{
    const uint32_t *cp = sc->ucp;
    const uint8_t *cls = sc->ucls;
    for (int pos = a; pos < b;) {
        int start = pos;
        uint32_t c = cp[pos];
        if (c == '\'' && pos + 1 < b) {
            uint32_t n1 = cp[pos + 1], n2 = pos + 2 < b ? cp[pos + 2] : 0;
            if (n1 == 's' || n1 == 't' || n1 == 'm' || n1 == 'd') pos += 2;
            else if ((n1 == 'r' && n2 == 'e') || (n1 == 'v' && n2 == 'e') || (n1 == 'l' && n2 == 'l'))
                pos += 3;
        }
        if (pos == start) {
            int c2 = c == ' ' ? (pos + 1 < b ? cls[pos + 1] : U_NONE) : cls[pos];
            if (c2 == U_L || c2 == U_N || c2 == U_O) {
                pos += c == ' ';
                while (pos < b && cls[pos] == c2) pos++;
            } else {
                int nws = 0;
                while (pos + nws < b && cls[pos + nws] == U_S) nws++;
                pos += nws > 1 && pos + nws < b ? nws - 1 : nws > 0 ? nws : 1;
            }
        }
        bpe_word(t, sc, text + sc->uoff[start], sc->uoff[pos] - sc->uoff[start]);
    }
}

static void bpe_fragment(const eng_tokenizer_t *t, scratch_t *sc, const char *s, size_t n)
{
    size_t cap = sc->unit_cap;
    if (!grow(sc, (void **)&sc->ucp, &cap, n + 1, sizeof *sc->ucp)) return;
    cap = sc->unit_cap;
    if (!grow(sc, (void **)&sc->uoff, &cap, n + 1, sizeof *sc->uoff)) return;
    cap = sc->unit_cap;
    if (!grow(sc, (void **)&sc->ucls, &cap, n + 1, 1)) return;
    sc->unit_cap = cap;
    int nu = 0;
    for (size_t i = 0; i < n; nu++) {
        uint32_t c;
        int len = utf8_decode((const uint8_t *)s + i, n - i, &c);
        if (len == 0) { /* an invalid byte: a unit of its own, class "other" */
            len = 1;
            c = 0xfffd;
        }
        sc->ucp[nu] = c;
        sc->ucls[nu] = (uint8_t)cp_class(c);
        sc->uoff[nu] = (uint32_t)i;
        i += (size_t)len;
    }
    sc->uoff[nu] = (uint32_t)n;
    if (t->pre != PRE_DIGITS) {
        gpt2_split(t, sc, s, 0, nu);
        return;
    }
    for (int a = 0; a < nu;) { /* each number code point alone, then the pattern on the rest */
        int b = a + 1;
        if (sc->ucls[a] != U_N)
            while (b < nu && sc->ucls[b] != U_N) b++;
        gpt2_split(t, sc, s, a, b);
        a = b;
    }
}

/* The special token starting at s (n bytes left), longest first; -1 if none. */
static int32_t match_special(const eng_tokenizer_t *t, const char *s, size_t n, int parse_special)
{
    for (int i = 0; i < t->n_special; i++) {
        int32_t id = t->special[i];
        size_t len = tok_len(t, id);
        if (len <= n && tok_text(t, id)[0] == s[0] && memcmp(tok_text(t, id), s, len) == 0 &&
            (parse_special || t->type[id] == ENG_TOKT_USER_DEFINED))
            return id;
    }
    return -1;
}

static void encode_fragment(const eng_tokenizer_t *t, scratch_t *sc, const char *s, size_t n,
                            int prev_special)
{
    if (n == 0) return;
    if (t->kind == ENG_TOK_SPM) spm_fragment(t, sc, s, n, t->add_space_prefix && prev_special);
    else bpe_fragment(t, sc, s, n);
}

int eng_tok_encode(const eng_tokenizer_t *t, const char *text, int add_bos, int parse_special,
                   int32_t *out, int cap)
{
    if (!t || !text || cap < 0 || (cap > 0 && !out)) return SL_EINVAL;
    size_t len = strlen(text);
    if (len > (size_t)INT32_MAX / 4) return SL_EINVAL;
    scratch_t sc = {.out = out, .cap = cap};
    if (add_bos && t->bos >= 0) emit(&sc, t->bos);
    int prev_special = 1; /* the first fragment gets the SPM space prefix */
    size_t frag = 0;
    for (size_t pos = 0; pos < len && !sc.oom;) {
        int32_t id = t->n_special ? match_special(t, text + pos, len - pos, parse_special) : -1;
        if (id < 0) {
            pos++;
            continue;
        }
        encode_fragment(t, &sc, text + frag, pos - frag, prev_special);
        emit(&sc, id);
        prev_special = 1;
        pos += tok_len(t, id);
        frag = pos;
    }
    if (!sc.oom) encode_fragment(t, &sc, text + frag, len - frag, prev_special);
    sl_free(sc.sym);
    sl_free(sc.heap);
    sl_free(sc.buf);
    sl_free(sc.ucp);
    sl_free(sc.uoff);
    sl_free(sc.ucls);
    return sc.oom ? SL_ENOMEM : sc.n;
}

/* ---------------------------------------------------------------- decoding & queries ---------- */

int eng_tok_piece(const eng_tokenizer_t *t, int32_t id, int special, char *buf, int cap)
{
    if (id < 0 || id >= t->n_vocab) return SL_EINVAL;
    const char *p = t->piece_arena + t->piece_off[id];
    size_t n = t->piece_off[id + 1] - t->piece_off[id];
    if (special && (t->type[id] == ENG_TOKT_CONTROL || t->type[id] == ENG_TOKT_UNKNOWN)) {
        p = tok_text(t, id);
        n = tok_len(t, id);
    }
    if (cap > 0) memcpy(buf, p, n < (size_t)cap ? n : (size_t)cap);
    return (int)n;
}

int eng_tok_decode(const eng_tokenizer_t *t, const int32_t *ids, int n, int special, char *out, int cap)
{
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        size_t room = cap > 0 && total < (size_t)cap - 1 ? (size_t)cap - 1 - total : 0;
        int k = eng_tok_piece(t, ids[i], special, out + (room ? total : 0), (int)room);
        if (k < 0) return k;
        total += (size_t)k;
        if (total > INT32_MAX) return SL_EINVAL;
    }
    if (cap > 0) out[total < (size_t)cap - 1 ? total : (size_t)cap - 1] = 0;
    return (int)total;
}

const char *eng_tok_text(const eng_tokenizer_t *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab ? tok_text(t, id) : NULL;
}

int eng_tok_type(const eng_tokenizer_t *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab ? t->type[id] : 0;
}

int32_t eng_tok_find(const eng_tokenizer_t *t, const char *text)
{
    return vocab_find(t, text, strlen(text));
}

eng_tok_kind_t eng_tok_kind(const eng_tokenizer_t *t) { return t->kind; }
int eng_tok_vocab(const eng_tokenizer_t *t) { return t->n_vocab; }
int32_t eng_tok_bos(const eng_tokenizer_t *t) { return t->bos; }
int32_t eng_tok_eos(const eng_tokenizer_t *t) { return t->eos; }
int32_t eng_tok_eot(const eng_tokenizer_t *t) { return t->eot; }
int eng_tok_add_bos(const eng_tokenizer_t *t) { return t->add_bos; }

int eng_tok_is_eog(const eng_tokenizer_t *t, int32_t id)
{
    return id >= 0 && (id == t->eos || id == t->eot);
}
