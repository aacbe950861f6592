package flyreplay

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
)

// SQLSTATE codes the library looks at.
const (
	// CodeReadOnly is read_only_sql_transaction: a write on a hot standby,
	// in a READ ONLY transaction, or with default_transaction_read_only.
	CodeReadOnly = "25006"
)

// IsReadOnly says whether err (or an error it wraps) is PostgreSQL's
// "cannot execute ... in a read-only transaction" (SQLSTATE 25006), the
// error a write gets from a read replica.
func IsReadOnly(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == CodeReadOnly
}
