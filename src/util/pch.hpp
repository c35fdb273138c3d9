// Precompiled header shared by every retclip target: the heavy LibTorch headers
// and the standard library pieces nearly every file uses.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>
