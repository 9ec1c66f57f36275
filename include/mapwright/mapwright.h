// mapwright/mapwright.h — the whole public API.
#pragma once

#include "mapwright/capnp.h"
#include "mapwright/error.h"
#include "mapwright/fault.h"
#include "mapwright/fixed_image.h"
#include "mapwright/flatbuffers.h"
#include "mapwright/loader.h"
#include "mapwright/lazy.h"
#include "mapwright/memfd_pool.h"
#include "mapwright/pool.h"
#include "mapwright/region.h"
#include "mapwright/sealed_image.h"
#include "mapwright/share.h"
#include "mapwright/wrapper.h"
