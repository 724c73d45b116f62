// Must NOT compile (built without OpenMP flags): asking for the OpenMP backend.
#include <curvature/curvature.hpp>

int main() { return curvature::backend::OpenMP{2}.threads(); }
