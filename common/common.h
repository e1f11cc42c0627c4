/* The common module's public header: everything in common/ in one include. */
#pragma once

#include "common/cleanup.h"
#include "common/json-util.h"
#include "common/log.h"
#include "common/macro.h"
#include "common/util.h"
