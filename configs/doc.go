// Package configs holds no code: its tests check the rules files the
// project ships (rules.yaml and examples/) for what loading them cannot
// show, that they do not trust what a device can forge, and replay the
// recordings of examples/testdata through them against the expectations
// kept there.
package configs
