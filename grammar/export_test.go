package grammar

// SchemasForTest lets the external engine test use the 10 test schemas.
var SchemasForTest = testSchemas
