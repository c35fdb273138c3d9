// Translation unit that owns the precompiled header (see RetclipTargets.cmake).
#include "pch.hpp"
