// Package exetrim gives back the pages of a long-running process's own
// executable that only its startup used.
//
// When a process touches a page of its executable, Linux maps not just
// that page but its neighbours already in the page cache (fault-around,
// 64 KiB), so a freshly built or copied binary ends up almost wholly
// resident: the node agent's 38 MiB executable had 22 MiB mapped, of
// which its running loop uses about 15. Trim drops this process's
// mappings of the executable's read-only segments once; the pages stay
// in the page cache (shared, reclaimable), and what the process still
// runs is mapped again on first use by a minor fault. It never touches
// writable or anonymous memory, so it cannot change what the program
// computes.
package exetrim
