package serve

import "net/http"

// A request is a chat or completion request: a body with the common fields.
type request interface {
	common() *commonFields
}

func (c *commonFields) common() *commonFields { return c }

// parseRequest opens a chat or completion request: it reads the body
// within the size limit, decodes it into req, checks the model and builds
// the sampling settings. The first error is the answer to send.
func (s *Server) parseRequest(w http.ResponseWriter, r *http.Request, req request) (*settings, *apiError) {
	body, e := s.readBody(w, r)
	if e != nil {
		return nil, e
	}
	if e := decode(body, req); e != nil {
		return nil, e
	}
	c := req.common()
	if e := s.checkModel(c.Model); e != nil {
		return nil, e
	}
	return c.settings()
}
