#ifndef CLUED_BUILD_INFO_H
#define CLUED_BUILD_INFO_H

/* What `clued version` prints; the build writes the definitions (cmake/build_info.cmake). */

/** The release version (CMake's project version). */
extern const char clued_version[];

/** The git commit built, abbreviated, with "-dirty" for uncommitted changes; "unknown" outside git. */
extern const char clued_git_commit[];

#endif
