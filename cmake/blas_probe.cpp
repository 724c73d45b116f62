// Configure-time probe (cmake/CurvatureBlas.cmake): whether the compiler's native target has
// AVX-512, and which kernels OpenBLAS chose for this CPU. Prints "<avx512|narrow>;<core name>".
#include <cstdio>

extern "C" char* openblas_get_corename(void);

int main() {
#if defined(__AVX512F__)
  const char* isa = "avx512";
#else
  const char* isa = "narrow";
#endif
  std::printf("%s;%s", isa, openblas_get_corename());
  return 0;
}
