// Symbol visibility for the shared library: everything is hidden unless marked PIPEWORKS_API.
// Every public header includes this one first, so it also refuses a compiler mode too old for
// them, with a message that says so rather than an error deep in a template.
#pragma once

#if !defined(__cplusplus) || __cplusplus < 202002L
#error "pipeworks needs C++20: compile with -std=c++20 (or -std=gnu++20) or newer; see README, Requirements"
#endif

#if defined(PIPEWORKS_BUILDING)
#define PIPEWORKS_API __attribute__((visibility("default")))
#else
#define PIPEWORKS_API
#endif
