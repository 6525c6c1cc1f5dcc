// Symbol visibility for the shared library: everything is hidden unless marked PIPEWORKS_API.
#pragma once

#if defined(PIPEWORKS_BUILDING)
#define PIPEWORKS_API __attribute__((visibility("default")))
#else
#define PIPEWORKS_API
#endif
