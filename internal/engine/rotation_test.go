package engine

import "testing"

func TestDecideRotation(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    RotationFacts
		want RotationPlan
	}{
		{"no record", RotationFacts{}, RotationPlan{}},
		{"published, not held", RotationFacts{Present: true, Phase: RotationPublish}, RotationPlan{Unseal: true, Ack: RotationHeld}},
		{"published, held, acked", RotationFacts{Present: true, Phase: RotationPublish, Held: true, Acked: RotationHeld}, RotationPlan{}},
		{"published, held, ack lost", RotationFacts{Present: true, Phase: RotationPublish, Held: true}, RotationPlan{Ack: RotationHeld}},
		{"switch, held", RotationFacts{Present: true, Phase: RotationSwitch, Held: true, Acked: RotationHeld}, RotationPlan{Switch: true, Ack: RotationSwitched}},
		{"switch, restarted (nothing held)", RotationFacts{Present: true, Phase: RotationSwitch}, RotationPlan{Unseal: true, Switch: true, Ack: RotationSwitched}},
		{"switch, done here", RotationFacts{Present: true, Phase: RotationSwitch, Held: true, Switched: true, Acked: RotationSwitched}, RotationPlan{}},
		{"done, configured with the new one", RotationFacts{Present: true, Phase: RotationDone}, RotationPlan{}},
		{"done, stale secrets file", RotationFacts{Present: true, Phase: RotationDone, Stale: true}, RotationPlan{Unseal: true, Switch: true, StaleConfig: true}},
		{"done, switched during the rotation", RotationFacts{Present: true, Phase: RotationDone, Stale: true, Held: true, Switched: true}, RotationPlan{}},
		{"unknown phase", RotationFacts{Present: true, Phase: "later"}, RotationPlan{}},
	} {
		if got := DecideRotation(tc.f); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
