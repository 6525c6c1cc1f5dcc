// The whole public API of pipeworks.
#pragma once

#include <pipeworks/address.hpp>
#include <pipeworks/error.hpp>
#include <pipeworks/framer.hpp>
#include <pipeworks/interfaces.hpp>
#include <pipeworks/loop.hpp>
#include <pipeworks/net_conf.hpp>
#include <pipeworks/packet.hpp>
#include <pipeworks/pipe.hpp>
#include <pipeworks/resolver.hpp>
#include <pipeworks/tls.hpp>
#include <pipeworks/reconnecting_client.hpp>
#include <pipeworks/version.hpp>
#include <pipeworks/sync.hpp>
#include <pipeworks/task.hpp>
#include <pipeworks/await.hpp>
