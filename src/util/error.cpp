// retclip::Error and UsageError are header-only; this unit anchors the module.
#include "retclip/util/error.hpp"
