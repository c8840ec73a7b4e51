/* xor+popcount throughput ceilings of this CPU, one loop per method (included by bnn_kernel.c).
 *
 * Each loop computes sum_i popcount(a[i] XOR b[i]) over two arrays of `nwords` 64-bit words that stay
 * in L1 (the best case of a binary conv's inner loop: no cache misses, no epilogue), `reps` times.
 * The caller runs it on every thread at once and divides the bits by the wall time: binary MAC/s.
 *   0 scalar:      64-bit `popcnt`, four independent accumulators
 *   1 avx2-lut:    nibble lookup with `vpshufb`, byte accumulators summed by `vpsadbw` every 31 vectors
 *                  (Mula, Kurz and Lemire 2018, "Faster Population Counts Using AVX2 Instructions")
 *   2 avx2-hs:     Harley-Seal carry-save adders over 16 vectors, the lookup on the carries only (same paper)
 *   3 avx512:      `vpopcntq` (AVX-512 VPOPCNTDQ)
 */
#if BNN_X86 && defined(__GNUC__)
#define CEIL_BARRIER(p) __asm__ volatile("" : : "r"(p) : "memory")

__attribute__((target("popcnt"))) static uint64_t ceil_scalar(const uint64_t* a, const uint64_t* b, int n, int reps)
{
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int r = 0; r < reps; ++r) {
        CEIL_BARRIER(a);
        for (int i = 0; i < n; i += 4) {
            s0 += (uint64_t)__builtin_popcountll(a[i] ^ b[i]);
            s1 += (uint64_t)__builtin_popcountll(a[i + 1] ^ b[i + 1]);
            s2 += (uint64_t)__builtin_popcountll(a[i + 2] ^ b[i + 2]);
            s3 += (uint64_t)__builtin_popcountll(a[i + 3] ^ b[i + 3]);
        }
    }
    return s0 + s1 + s2 + s3;
}

#define LUT_NIBBLES                                                                                                  \
    _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4)

__attribute__((target("avx2"))) static inline __m256i ceil_cnt8(__m256i x, __m256i lut, __m256i m4)
{
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(x, m4)),
                           _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x, 4), m4)));
}

__attribute__((target("avx2"))) static uint64_t ceil_lut(const uint64_t* a, const uint64_t* b, int n, int reps)
{
    const __m256i lut = LUT_NIBBLES, m4 = _mm256_set1_epi8(0x0f), z = _mm256_setzero_si256();
    __m256i tot = z;
    for (int r = 0; r < reps; ++r) {
        CEIL_BARRIER(a);
        for (int i = 0; i < n;) {
            /* two independent byte accumulators, each summed by vpsadbw after at most 31 vectors */
            __m256i c0 = z, c1 = z;
            const int end = i + 8 * 30 < n ? i + 8 * 30 : n;
            for (; i < end; i += 8) {
                __m256i x0 = _mm256_xor_si256(_mm256_loadu_si256((const __m256i*)(a + i)),
                                              _mm256_loadu_si256((const __m256i*)(b + i)));
                __m256i x1 = _mm256_xor_si256(_mm256_loadu_si256((const __m256i*)(a + i + 4)),
                                              _mm256_loadu_si256((const __m256i*)(b + i + 4)));
                c0 = _mm256_add_epi8(c0, ceil_cnt8(x0, lut, m4));
                c1 = _mm256_add_epi8(c1, ceil_cnt8(x1, lut, m4));
            }
            tot = _mm256_add_epi64(tot, _mm256_add_epi64(_mm256_sad_epu8(c0, z), _mm256_sad_epu8(c1, z)));
        }
    }
    uint64_t t[4];
    _mm256_storeu_si256((__m256i*)t, tot);
    return t[0] + t[1] + t[2] + t[3];
}

#define CSA(h, l, a, b, c)                                                                                           \
    do {                                                                                                             \
        __m256i u_ = _mm256_xor_si256(a, b);                                                                         \
        h = _mm256_or_si256(_mm256_and_si256(a, b), _mm256_and_si256(u_, c));                                       \
        l = _mm256_xor_si256(u_, c);                                                                                 \
    } while (0)

__attribute__((target("avx2"))) static uint64_t ceil_hs(const uint64_t* a, const uint64_t* b, int n, int reps)
{
    const __m256i lut = LUT_NIBBLES, m4 = _mm256_set1_epi8(0x0f), z = _mm256_setzero_si256();
    __m256i tot = z;
#define XV(k) _mm256_xor_si256(_mm256_loadu_si256((const __m256i*)(a + i + 4 * (k))), \
                               _mm256_loadu_si256((const __m256i*)(b + i + 4 * (k))))
    /* eight vectors k0..k0+7 into the ones and twos, their carries into the fours, the fours' carry out */
#define HS8(eights_out, k0)                                                                                          \
    do {                                                                                                             \
        CSA(twosA, ones, ones, XV((k0) + 0), XV((k0) + 1));                                                          \
        CSA(twosB, ones, ones, XV((k0) + 2), XV((k0) + 3));                                                          \
        CSA(foursA, twos, twos, twosA, twosB);                                                                       \
        CSA(twosA, ones, ones, XV((k0) + 4), XV((k0) + 5));                                                          \
        CSA(twosB, ones, ones, XV((k0) + 6), XV((k0) + 7));                                                          \
        CSA(foursB, twos, twos, twosA, twosB);                                                                       \
        CSA(eights_out, fours, fours, foursA, foursB);                                                               \
    } while (0)
    for (int r = 0; r < reps; ++r) {
        CEIL_BARRIER(a);
        __m256i ones = z, twos = z, fours = z, eights = z, sixteens, twosA, twosB, foursA, foursB, eightsA, eightsB;
        __m256i cnt = z;
        for (int i = 0; i + 64 <= n; i += 64) {
            HS8(eightsA, 0);
            HS8(eightsB, 8);
            CSA(sixteens, eights, eights, eightsA, eightsB);
            cnt = _mm256_add_epi64(cnt, _mm256_sad_epu8(ceil_cnt8(sixteens, lut, m4), z));
        }
        cnt = _mm256_slli_epi64(cnt, 4);
        cnt = _mm256_add_epi64(cnt, _mm256_slli_epi64(_mm256_sad_epu8(ceil_cnt8(eights, lut, m4), z), 3));
        cnt = _mm256_add_epi64(cnt, _mm256_slli_epi64(_mm256_sad_epu8(ceil_cnt8(fours, lut, m4), z), 2));
        cnt = _mm256_add_epi64(cnt, _mm256_slli_epi64(_mm256_sad_epu8(ceil_cnt8(twos, lut, m4), z), 1));
        cnt = _mm256_add_epi64(cnt, _mm256_sad_epu8(ceil_cnt8(ones, lut, m4), z));
        tot = _mm256_add_epi64(tot, cnt);
    }
#undef XV
#undef HS8
    uint64_t t[4];
    _mm256_storeu_si256((__m256i*)t, tot);
    return t[0] + t[1] + t[2] + t[3];
}
#undef CSA

__attribute__((target("avx512f,avx512vpopcntdq"))) static uint64_t ceil_avx512(const uint64_t* a, const uint64_t* b,
                                                                                int n, int reps)
{
    __m512i c0 = _mm512_setzero_si512(), c1 = c0;
    for (int r = 0; r < reps; ++r) {
        CEIL_BARRIER(a);
        for (int i = 0; i < n; i += 16) {
            c0 = _mm512_add_epi64(c0, _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512((const void*)(a + i)),
                                                                           _mm512_loadu_si512((const void*)(b + i)))));
            c1 = _mm512_add_epi64(c1, _mm512_popcnt_epi64(_mm512_xor_si512(
                                          _mm512_loadu_si512((const void*)(a + i + 8)),
                                          _mm512_loadu_si512((const void*)(b + i + 8)))));
        }
    }
    return (uint64_t)_mm512_reduce_add_epi64(_mm512_add_epi64(c0, c1));
}
#undef LUT_NIBBLES
#undef CEIL_BARRIER
#define HAVE_CEILING 1
#else
#define HAVE_CEILING 0
#endif
