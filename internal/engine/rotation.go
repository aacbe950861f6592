package engine

// A member's part in a secrets rotation (`petrel secrets rotate`, run by
// internal/ops; the record is store.SecretRotation). It decides nothing
// about roles and touches neither Postgres' state nor the leader key: it
// only says which of two passwords the member uses for one kind and what
// it tells the operation. The protocol, per kind:
//
//	publish  the operation seals the new password into the record; each
//	         member unseals it and holds it beside the current one, then
//	         acknowledges "held" (with a MAC of its current password)
//	switch   the operation has run ALTER ROLE on the leader; each member
//	         switches (passfiles, the admin API's password, the password
//	         it would unseal the CA with) and acknowledges "switched"
//	done     every live member switched; a member that starts later with
//	         a secrets file still holding the old password (its MAC is in
//	         the record) switches at once, and warns that the file is stale
//
// Until it switches a member falls back to the new password when the old
// one is refused, and after it switched to the old one: the ALTER ROLE and
// the switches cannot be one instant.

// RotationFacts is one kind's rotation as a member sees it.
type RotationFacts struct {
	Present bool   // the store holds a rotation record of this kind
	ID      string // the record's rotation
	Phase   string // store.RotationPublish, RotationSwitch or RotationDone
	// Held: this member holds the unsealed password of ID.
	Held bool
	// Switched: this member uses ID's password now.
	Switched bool
	// Acked is the state this member's acknowledgement in the store gives
	// for ID ("" none, or one for another rotation).
	Acked string
	// Stale: the password this member was configured with (its secrets
	// file or environment) is one the record says was rotated away.
	Stale bool
}

// RotationPlan is DecideRotation's answer, to carry out in order: unseal,
// switch, acknowledge.
type RotationPlan struct {
	Unseal bool   // open the sealed password and hold it
	Switch bool   // use it from now on
	Ack    string // write this acknowledgement ("" none)
	// StaleConfig: the member starts with an old password in its secrets
	// file: warn (the rotated one from the store is used).
	StaleConfig bool
}

// Rotation phases and acknowledgements (store's values, repeated here so
// the engine stays free of the store).
const (
	RotationPublish  = "publish"
	RotationSwitch   = "switch"
	RotationDone     = "done"
	RotationHeld     = "held"
	RotationSwitched = "switched"
)

// DecideRotation is what a member does about one kind's rotation.
func DecideRotation(f RotationFacts) RotationPlan {
	if !f.Present {
		return RotationPlan{}
	}
	var p RotationPlan
	switch f.Phase {
	case RotationPublish:
		p.Unseal = !f.Held
		if f.Acked != RotationHeld && f.Acked != RotationSwitched {
			p.Ack = RotationHeld
		}
	case RotationSwitch:
		p.Unseal = !f.Held
		p.Switch = !f.Switched
		if f.Acked != RotationSwitched {
			p.Ack = RotationSwitched
		}
	case RotationDone:
		// Only a member still configured with the old password follows a
		// finished rotation: one configured with anything else (the new
		// password, or a later one set by hand) keeps what it has.
		if f.Stale && !f.Switched {
			p.Unseal = !f.Held
			p.Switch = true
			p.StaleConfig = true
		}
	}
	return p
}
