// `--version` for the example programs, which are installed with -Dinstall_examples=true.
#pragma once

#include <pipeworks/version.hpp>

#include <cstdio>
#include <cstring>

// True, once "NAME VERSION" is printed, when the first argument is --version: main() then
// returns 0. NAME is the program's own name (argv[0] without its directory).
inline bool print_version(int argc, char** argv) {
    if (argc < 2 || std::strcmp(argv[1], "--version") != 0) return false;
    const char* slash = std::strrchr(argv[0], '/');
    std::printf("%s %s\n", slash ? slash + 1 : argv[0], pipeworks::version());
    return true;
}
