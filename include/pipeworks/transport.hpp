// Transport: the two kinds of socket a pipe runs on.
#pragma once

#include <pipeworks/export.hpp>

#include <cstdint>

namespace pipeworks {

enum class Transport : std::uint8_t { tcp, udp };

}  // namespace pipeworks
