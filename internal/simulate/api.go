package simulate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tether-iot/tether"
)

// API is a [Provisioner] over the REST API of any Tether node, with an
// admin API key.
type API struct {
	// URL is the node's HTTP base URL, such as http://localhost:8080.
	URL string
	Key string
	// Client defaults to one with a 10 s timeout.
	Client *http.Client
}

var _ Provisioner = (*API)(nil)

// NewAPI returns a provisioner for the node at baseURL, checking that it
// is an http or https URL.
func NewAPI(baseURL, key string) (*API, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("API URL %q: want http://host:port or https://host:port", baseURL)
	}
	if key == "" {
		return nil, fmt.Errorf("an admin API key is needed (--api-key or TETHER_API_KEY)")
	}
	return &API{URL: strings.TrimSuffix(baseURL, "/"), Key: key, Client: &http.Client{Timeout: 10 * time.Second}}, nil
}

func (a *API) Profile(ctx context.Context, id string) (*tether.Profile, error) {
	var p tether.Profile
	return &p, a.do(ctx, http.MethodGet, "/api/v1/profiles/"+url.PathEscape(id), nil, &p)
}

func (a *API) CreateProfile(ctx context.Context, p tether.Profile) error {
	return a.do(ctx, http.MethodPost, "/api/v1/profiles", p, nil)
}

func (a *API) Rule(ctx context.Context, id string) (*tether.Rule, error) {
	var r tether.Rule
	return &r, a.do(ctx, http.MethodGet, "/api/v1/rules/"+url.PathEscape(id), nil, &r)
}

func (a *API) CreateRule(ctx context.Context, r tether.Rule) error {
	return a.do(ctx, http.MethodPost, "/api/v1/rules", r, nil)
}

func (a *API) Device(ctx context.Context, id string) (*tether.Device, error) {
	var d tether.Device
	return &d, a.do(ctx, http.MethodGet, "/api/v1/devices/"+url.PathEscape(id), nil, &d)
}

func (a *API) CreateDevice(ctx context.Context, d tether.Device) (string, error) {
	in := struct {
		ID      string            `json:"id"`
		Name    string            `json:"name"`
		Labels  map[string]string `json:"labels"`
		Profile string            `json:"profile,omitempty"`
	}{d.ID, d.Name, d.Labels, d.ProfileID}
	var out struct {
		Token string `json:"token"`
	}
	return out.Token, a.do(ctx, http.MethodPost, "/api/v1/devices", in, &out)
}

func (a *API) RotateToken(ctx context.Context, id string) (string, error) {
	var out struct {
		Token string `json:"token"`
	}
	return out.Token, a.do(ctx, http.MethodPost, "/api/v1/devices/"+url.PathEscape(id)+"/token", nil, &out)
}

// maxAnswer bounds an answer read from the node.
const maxAnswer = 4 << 20

// do calls the API and decodes a 2xx JSON answer into out; a problem
// answer becomes a *tether.Error with the problem's code and detail.
func (a *API) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.URL+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.Key)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	client := a.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		return problemError(resp.StatusCode, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: the answer is not the JSON expected: %w", method, path, err)
		}
	}
	return nil
}

// problemError reads a problem+json answer into a *tether.Error; an
// answer that is not one is named by its status.
func problemError(status int, raw []byte) error {
	var p struct {
		Code   string `json:"code"`
		Detail string `json:"detail"`
	}
	if json.Unmarshal(raw, &p) != nil || p.Code == "" {
		p.Code = statusCodes[status]
		if p.Code == "" {
			p.Code = tether.EINTERNAL
		}
		p.Detail = http.StatusText(status)
	}
	return tether.Errorf(p.Code, "%d: %s", status, p.Detail)
}

// statusCodes name the error codes of answers that are not problems (a
// proxy's, or a node too old to say).
var statusCodes = map[int]string{
	http.StatusNotFound: tether.ENOTFOUND, http.StatusConflict: tether.ECONFLICT,
	http.StatusUnauthorized: tether.EUNAUTHORIZED, http.StatusForbidden: tether.EFORBIDDEN,
	http.StatusBadRequest: tether.EINVALID, http.StatusTooManyRequests: tether.ETOOMANY,
}
