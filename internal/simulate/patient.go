package simulate

import (
	"encoding/json"
	"math/rand/v2"
	"time"
)

// Patient monitor constants.
const (
	// patientIncidentAt is when an incident monitor's patient's heart
	// starts racing, for patientIncidentFor.
	patientIncidentAt  = 20 * time.Second
	patientIncidentFor = 60 * time.Second
)

// Patient episodes: a rare spell out of the normal ranges.
const (
	episodeTachycardia  = "tachycardia"
	episodeBradycardia  = "bradycardia"
	episodeDesaturation = "desaturation"
)

// patientMonitor follows a patient's vital signs: each wanders around the
// patient's own normal value, and now and then an episode (a racing or
// slow heart, low oxygen) pulls them out of range for a minute or so.
type patientMonitor struct {
	hrBase                   float64
	hr, spo2, rr, battery    float64
	charging                 bool
	episode                  string
	episodeLeft, nextEpisode time.Duration
	incidentNext             bool
}

func newPatientMonitor(rng *rand.Rand, incident bool) *patientMonitor {
	p := &patientMonitor{hrBase: between(rng, 62, 82), spo2: 97.5 + noise(rng, 0.3), rr: 15,
		battery: between(rng, 55, 100), nextEpisode: seconds(rng, 300, 1200)}
	p.hr = p.hrBase
	if incident {
		p.nextEpisode, p.incidentNext = patientIncidentAt, true
	}
	return p
}

func (p *patientMonitor) Step(dt time.Duration, rng *rand.Rand) map[string]any {
	s := dt.Seconds()
	if p.episode != "" {
		if p.episodeLeft -= dt; p.episodeLeft <= 0 {
			p.episode, p.nextEpisode = "", seconds(rng, 600, 1800)
		}
	} else if p.nextEpisode -= dt; p.nextEpisode <= 0 {
		switch x := rng.Float64(); {
		case p.incidentNext:
			p.episode, p.episodeLeft, p.incidentNext = episodeTachycardia, patientIncidentFor, false
		case x < 0.5:
			p.episode, p.episodeLeft = episodeTachycardia, seconds(rng, 30, 90)
		case x < 0.75:
			p.episode, p.episodeLeft = episodeBradycardia, seconds(rng, 30, 90)
		default:
			p.episode, p.episodeLeft = episodeDesaturation, seconds(rng, 30, 90)
		}
	}
	hr, spo2, rr := p.hrBase, 97.5, 15.0
	switch p.episode {
	case episodeTachycardia:
		hr, rr = 138, 22
	case episodeBradycardia:
		hr = 40
	case episodeDesaturation:
		hr, spo2, rr = p.hrBase+10, 88.5, 20
	}
	p.hr = clamp(p.hr+(hr-p.hr)*0.25*s+noise(rng, 1), 25, 220)
	p.spo2 = clamp(p.spo2+(spo2-p.spo2)*0.2*s+noise(rng, 0.25), 70, 100)
	p.rr = clamp(p.rr+(rr-p.rr)*0.1*s+noise(rng, 0.3), 4, 45)
	if p.charging {
		if p.battery += 0.05 * s; p.battery >= 100 {
			p.battery, p.charging = 100, false
		}
	} else if p.battery -= 0.003 * s; p.battery < 20 {
		p.charging = true
	}
	return map[string]any{
		"heart_rate": round(p.hr, 0),
		"spo2":       round(p.spo2, 1),
		"resp_rate":  round(p.rr, 0),
		"battery":    round(p.battery, 0),
	}
}

func (p *patientMonitor) Command(name string, _ json.RawMessage) (any, error) {
	if name != "ping" {
		return nil, errUnknownCommand(KindPatientMonitor, name)
	}
	return map[string]any{"pong": true, "battery": round(p.battery, 0)}, nil
}

func (p *patientMonitor) Desire(map[string]any) bool { return false }

func (p *patientMonitor) Reported() map[string]any {
	return map[string]any{"firmware": "1.8.0"}
}
