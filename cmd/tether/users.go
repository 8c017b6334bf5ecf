package main

import (
	"context"
	"fmt"
	"io"

	"github.com/tether-iot/tether/internal/user"
)

// AdminLogin is the e-mail address and password of the first admin user.
type AdminLogin struct {
	Email, Password string
}

// startUsers builds the user service and, at the first start (no user
// at all), creates the first admin user: with BootstrapAdmin's address
// and password if set, else the default address and a generated
// password, which PrintWelcome shows this once. Several nodes starting
// at once create one.
func (m *Main) startUsers(ctx context.Context) error {
	m.Users = user.New(m.DB, user.Options{Logger: m.log.With("component", "user")})
	u, generated, err := m.Users.Bootstrap(ctx, m.BootstrapAdmin.Email, m.BootstrapAdmin.Password)
	if err != nil {
		return fmt.Errorf("bootstrap the first admin user (TETHER_BOOTSTRAP_ADMIN_EMAIL, TETHER_BOOTSTRAP_ADMIN_PASSWORD): %w", err)
	}
	if u != nil {
		m.AdminUser = &AdminLogin{Email: u.Email, Password: generated}
		m.log.Info("created the first admin user", "email", u.Email, "password_generated", generated != "")
	}
	return nil
}

// printAdminUser is the part of the welcome text about the first admin
// user, if this start created it.
func (m *Main) printAdminUser(w io.Writer) {
	a := m.AdminUser
	if a == nil {
		return
	}
	url := "http://" + displayAddr(m.HTTP.Addr()) + "/"
	if a.Password == "" {
		fmt.Fprintf(w, "\n  Admin user %s created with the password from TETHER_BOOTSTRAP_ADMIN_PASSWORD.\n  Sign in at %s\n", a.Email, url)
		return
	}
	fmt.Fprintf(w, "\n  Admin user (the password is shown only this once; it is stored hashed):\n\n    e-mail:   %s\n    password: %s\n\n  Sign in at %s and change it under Settings.\n",
		a.Email, a.Password, url)
}
