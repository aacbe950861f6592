// Package flyreplay is petrel's app library for multi-region apps behind
// petrel's edge (or any edge that speaks Fly's fly-replay protocol).
//
// An app runs in every region against its region's read replica
// (pkg/regiondsn gives the URL). A write there fails with PostgreSQL's
// read-only error (SQLSTATE 25006); the middleware turns it into a
// "409 + fly-replay: region=<primary>" response, and the edge replays
// the whole HTTP request in the primary region. Positions (timeline and
// LSN) are the read-your-writes tokens the edge uses; apps that handle
// consistency themselves can mint and wait for them with the helpers here.
package flyreplay
